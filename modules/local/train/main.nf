process SCPERMUT_TRAIN {
    tag "${meta.id}"
    label 'process_medium'
    label 'process_gpu'

    conda "${moduleDir}/environment.yml"
    container "${ task.ext.use_gpu ? 'ghcr.io/scpermut/scpermut:0.1.0-gpu' : 'ghcr.io/scpermut/scpermut:0.1.0' }"

    input:
    tuple val(meta), path(prepared)
    path(best_params)  // best_params.json of SCPERMUT_TUNE_SELECT, or [] without --tune

    output:
    tuple val(meta), path('model'), emit: model
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions
    tuple val("${task.process}"), val('tensorflow'), eval('python3 -c "import tensorflow as tf; print(tf.__version__)"'), emit: versions_tensorflow, topic: versions
    tuple val("${task.process}"), val('keras'), eval("python3 -c 'from importlib.metadata import version; print(version(\"keras\"))'"), emit: versions_keras, topic: versions
    tuple val("${task.process}"), val('numpy'), eval("python3 -c 'from importlib.metadata import version; print(version(\"numpy\"))'"), emit: versions_numpy, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    // best_params.json holds every training option of the best trial, those SCPERMUT_TUNE_TRIAL
    // got from ext.args included; flags would win over the file, so it comes alone.
    def args = best_params ? "--params ${best_params}" : (task.ext.args ?: '')
    // Under -profile gpu, ask for the GPU explicitly: a missing GPU then fails the task
    // instead of training for hours on the CPU.
    def device = task.ext.use_gpu ? 'gpu' : 'cpu'
    """
    export TF_NUM_INTRAOP_THREADS=${task.cpus} TF_NUM_INTEROP_THREADS=1 OMP_NUM_THREADS=${task.cpus}
    scpermut train \\
        ${prepared} \\
        --out model \\
        --device ${device} \\
        ${args}
    """

    stub:
    """
    mkdir model
    touch model/config.json model/model.weights.h5 model/genes.txt model/classes.json
    touch model/batches.json model/preprocess.json model/history.csv model/run.json
    """
}
