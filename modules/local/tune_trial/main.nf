process SCPERMUT_TUNE_TRIAL {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"
    container "${ task.ext.use_gpu ? 'ghcr.io/scpermut/scpermut:0.1.0-gpu' : 'ghcr.io/scpermut/scpermut:0.1.0' }"

    input:
    tuple val(meta), path(trial)
    path(prepared)

    output:
    tuple val(meta), path('score.json'), emit: score
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions
    tuple val("${task.process}"), val('tensorflow'), eval('python3 -c "import tensorflow as tf; print(tf.__version__)"'), emit: versions_tensorflow, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // As in SCPERMUT_TRAIN: under -profile gpu a missing GPU fails the task.
    def device = task.ext.use_gpu ? 'gpu' : 'cpu'
    """
    export TF_NUM_INTRAOP_THREADS=${task.cpus} TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=${task.cpus}
    scpermut tune-trial \\
        ${prepared} \\
        ${trial} \\
        --out . \\
        --device ${device} \\
        ${args}
    """

    stub:
    """
    touch score.json
    """
}
