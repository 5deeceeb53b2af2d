#!/usr/bin/env nextflow
/*
========================================================================================
    scpermut: cell-type annotation and batch correction for single-cell RNA-seq atlases
========================================================================================
    nextflow run . -profile test,docker --outdir results
    Usage: docs/usage.md    Outputs: docs/output.md
----------------------------------------------------------------------------------------
*/

include { SCPERMUT                } from './workflows/scpermut'
include { PIPELINE_INITIALISATION } from './subworkflows/local/utils_scpermut_pipeline'
include { PIPELINE_COMPLETION     } from './subworkflows/local/utils_scpermut_pipeline'

workflow {

    main:
    PIPELINE_INITIALISATION(
        params.version.toString().toBoolean(),
        params.validate_params.toString().toBoolean(),
        params.outdir,
        params.input,
        params.multiqc_config,
    )

    SCPERMUT(
        PIPELINE_INITIALISATION.out.samples,
        params.model ? file(params.model, checkIfExists: true) : null,
        file("${projectDir}/assets/multiqc_config.yml", checkIfExists: true),
        PIPELINE_INITIALISATION.out.extra_multiqc_config,
        PIPELINE_INITIALISATION.out.workflow_summary,
    )

    PIPELINE_COMPLETION(
        params.outdir,
        SCPERMUT.out.multiqc_report,
    )
}
