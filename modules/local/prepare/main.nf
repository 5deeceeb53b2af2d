process SCPERMUT_PREPARE {
    tag "${meta.id}"
    label 'process_medium'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scpermut/scpermut:0.1.0'

    input:
    tuple val(meta), path(qc_h5ads, stageAs: 'qc/*')

    output:
    tuple val(meta), path("${meta.folder ?: ''}prepared.h5ad")       , emit: h5ad
    tuple val(meta), path("${meta.folder ?: ''}prepare_summary.json"), emit: summary
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions
    tuple val("${task.process}"), val('scanpy'), eval("python3 -c 'from importlib.metadata import version; print(version(\"scanpy\"))'"), emit: versions_scanpy, topic: versions
    tuple val("${task.process}"), val('anndata'), eval("python3 -c 'from importlib.metadata import version; print(version(\"anndata\"))'"), emit: versions_anndata, topic: versions
    tuple val("${task.process}"), val('numpy'), eval("python3 -c 'from importlib.metadata import version; print(version(\"numpy\"))'"), emit: versions_numpy, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def folder = meta.folder ?: ''
    """
    scpermut prepare \\
        ${qc_h5ads} \\
        --outdir ./${folder} \\
        ${args}
    """

    stub:
    def folder = meta.folder ?: ''
    """
    mkdir -p ./${folder}
    touch ${folder}prepared.h5ad
    touch ${folder}prepare_summary.json
    """
}
