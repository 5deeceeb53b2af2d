process MULTIQC_VERSION {
    label 'process_single'

    // The image and environment of MULTIQC (the contract tests keep them identical), so the
    // version reported is the one that writes the report.
    conda "${moduleDir}/environment.yml"
    container "${ workflow.containerEngine in ['singularity', 'apptainer'] && !task.ext.singularity_pull_docker_container ?
        'https://depot.galaxyproject.org/singularity/multiqc:1.29--pyhdfd78af_0' :
        'quay.io/biocontainers/multiqc:1.29--pyhdfd78af_0' }"

    output:
    // Reported under MULTIQC, the step whose software it is.
    tuple val('MULTIQC'), val('multiqc'), eval('multiqc --version | sed "s/.*version //"'), emit: versions_multiqc, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    """
    multiqc --version
    """

    stub:
    """
    true
    """
}
