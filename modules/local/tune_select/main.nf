process SCPERMUT_TUNE_SELECT {
    tag "${scores.size()} trials"
    label 'process_single'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scpermut/scpermut:0.1.0'

    input:
    // Every trial's file is named score.json: staged under distinct names.
    path(scores, stageAs: 'scores/score_?.json')

    output:
    path('tune/best_params.json')    , emit: best_params
    path('tune/trials.tsv')          , emit: trials
    path('tune/tune_trials_mqc.tsv') , emit: multiqc_files
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    scpermut tune-select \\
        ${scores} \\
        --out tune \\
        ${args}
    """

    stub:
    """
    mkdir tune
    touch tune/best_params.json tune/trials.tsv tune/tune_trials_mqc.tsv
    """
}
