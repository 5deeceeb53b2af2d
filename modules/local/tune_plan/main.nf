process SCPERMUT_TUNE_PLAN {
    tag "${trials} trials"
    label 'process_single'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scpermut/scpermut:0.1.0'

    input:
    val(trials)

    output:
    path('tune/trials/trial_*.json'), emit: trials
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    """
    scpermut tune-plan \\
        --trials ${trials} \\
        --out tune \\
        ${args}
    """

    stub:
    """
    mkdir -p tune/trials
    touch tune/trials/trial_000.json
    """
}
