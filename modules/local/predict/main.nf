process SCPERMUT_PREDICT {
    tag "${meta.id}"
    label 'process_medium'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scpermut/scpermut:0.1.0'

    input:
    tuple val(meta), path(h5ad)
    path model

    output:
    tuple val(meta), path("${meta.folder ?: ''}annotated.h5ad"), emit: h5ad
    tuple val(meta), path("${meta.folder ?: ''}labels.tsv"), emit: labels, optional: true
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def folder = meta.folder ?: ''
    """
    export TF_NUM_INTRAOP_THREADS=${task.cpus} TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=${task.cpus}
    mkdir -p ./${folder}
    scpermut predict \\
        ${h5ad} \\
        --model ${model} \\
        --out ./${folder}annotated.h5ad \\
        ${args}
    """

    stub:
    def folder = meta.folder ?: ''
    """
    mkdir -p ./${folder}
    touch ${folder}annotated.h5ad ${folder}labels.tsv
    """
}
