process SCPERMUT_REPORT {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scpermut/scpermut:0.1.0'

    input:
    tuple val(meta), path(annotated)
    path model

    output:
    tuple val(meta), path('report.html') , emit: html
    tuple val(meta), path('metrics.json'), emit: json
    tuple val(meta), path('metrics.tsv') , emit: tsv
    path '*_mqc.tsv'                     , emit: multiqc_files
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    scpermut report \\
        ${annotated} \\
        --model ${model} \\
        --outdir . \\
        ${args}
    """

    stub:
    """
    touch report.html
    touch metrics.json
    touch metrics.tsv
    touch scpermut_metrics_mqc.tsv
    """
}
