process MULTIQC {
    label 'process_single'

    conda "${moduleDir}/environment.yml"
    container "${ workflow.containerEngine in ['singularity', 'apptainer'] && !task.ext.singularity_pull_docker_container ?
        'https://depot.galaxyproject.org/singularity/multiqc:1.29--pyhdfd78af_0' :
        'quay.io/biocontainers/multiqc:1.29--pyhdfd78af_0' }"

    input:
    path multiqc_files, stageAs: '?/*'
    // Each config in a folder of its own: the pipeline's and the user's (--multiqc_config)
    // may have the same name (multiqc_config.yml) and must not collide in the task folder.
    path multiqc_config, stageAs: 'pipeline_config/*'
    path extra_multiqc_config, stageAs: 'user_config/*'

    output:
    path '*multiqc_report.html', emit: report
    path '*_data'              , emit: data
    path '*_plots'             , emit: plots, optional: true
    // No version output: MULTIQC reads the collected versions topic, so it cannot add to
    // it; MULTIQC_VERSION reports this image's MultiQC version instead.

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    def config = multiqc_config ? "--config ${multiqc_config}" : ''
    def extra_config = extra_multiqc_config ? "--config ${extra_multiqc_config}" : ''
    """
    multiqc \\
        --force \\
        ${config} \\
        ${extra_config} \\
        ${args} \\
        .
    """

    stub:
    """
    mkdir multiqc_data
    touch multiqc_report.html
    """
}
