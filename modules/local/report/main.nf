process SCPERMUT_REPORT {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scpermut/scpermut:0.1.0'

    input:
    tuple val(meta), path(annotated)
    path model

    output:
    tuple val(meta), path("${meta.folder ?: ''}report.html") , emit: html
    tuple val(meta), path("${meta.folder ?: ''}metrics.json"), emit: json
    tuple val(meta), path("${meta.folder ?: ''}metrics.tsv") , emit: tsv
    path "${meta.folder ?: ''}*_mqc.tsv"  , emit: multiqc_files
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def folder = meta.folder ?: ''
    """
    scpermut report \\
        ${annotated} \\
        --model ${model} \\
        --outdir ./${folder} \\
        ${args}
    """

    stub:
    def folder = meta.folder ?: ''
    """
    mkdir -p ./${folder}
    touch ${folder}report.html
    touch ${folder}metrics.json
    touch ${folder}metrics.tsv
    touch ${folder}scpermut_metrics_mqc.tsv
    """
}
