/*
========================================================================================
    Initialisation (version, parameter validation, samplesheet) and completion
========================================================================================
*/

include { validateParameters } from 'plugin/nf-schema'
include { paramsSummaryLog   } from 'plugin/nf-schema'
include { paramsSummaryMap   } from 'plugin/nf-schema'
include { samplesheetToList  } from 'plugin/nf-schema'

workflow PIPELINE_INITIALISATION {

    take:
    version         // boolean: print the pipeline version and exit
    validate_params // boolean: check params against nextflow_schema.json
    outdir          // string: results folder
    input           // string: samplesheet CSV
    multiqc_config  // string: the user's extra MultiQC config, or null

    main:
    if (version) {
        log.info("${workflow.manifest.name} ${workflow.manifest.version}")
        System.exit(0)
    }

    checkProfiles(workflow.profile)

    // nf-schema also checks the samplesheet against assets/schema_input.json.
    if (validate_params) {
        validateParameters()
    }
    if (params.tune.toString().toInteger() > 0 && params.model) {
        log.warn("--tune ${params.tune} is ignored: --model ${params.model} is used as it is, nothing is trained")
    }
    log.info(paramsSummaryLog(workflow))
    def summary = paramsSummaryMap(workflow, parameters_schema: 'nextflow_schema.json')
    writeParams(outdir)

    def samplesheet = file(input, checkIfExists: true)
    def rows = samplesheetToList(samplesheet, "${projectDir}/assets/schema_input.json")
        .collect { meta, h5ad -> textMeta(samplesheet, meta, h5ad) }
        .collect { meta, h5ad -> [meta, resolveSampleFile(samplesheet, h5ad, meta.id)] }

    emit:
    samples              = channel.fromList(rows)
    extra_multiqc_config = channel.value(multiqc_config ? file(multiqc_config, checkIfExists: true) : [])
    workflow_summary     = channel.value(workflowSummaryMultiqc(summary))
}

workflow PIPELINE_COMPLETION {

    take:
    outdir         // string: results folder
    multiqc_report // channel: path(multiqc_report.html)

    main:
    multiqc_report.view { report -> "MultiQC report: ${report.name} (published to ${outdir}/multiqc)" }

    // Inside the handler `workflow` is not the run's metadata (it reads as null), so the
    // message is built by a script-level function, where it is.
    workflow.onComplete {
        completionLog(outdir)
    }
}

/*
========================================================================================
    FUNCTIONS
========================================================================================
*/

// The conda environments hold the CPU build of TensorFlow: a GPU run needs the CUDA image
// of a container profile, so stop before any task instead of failing TRAIN hours later.
def checkProfiles(String profile) {
    def profiles = profile.tokenize(',').collect { name -> name.trim() }
    def conda = profiles.intersect(['conda', 'mamba'])
    if ('gpu' in profiles && conda) {
        error("-profile ${profile}: the gpu profile needs a container profile (docker, podman, singularity or apptainer); the ${conda[0]} environment has the CPU build of TensorFlow only.")
    }
}

// One closing line: where the results are, or where to look after a failure.
def completionLog(outdir) {
    if (workflow.success) {
        log.info("scpermut finished: results in ${outdir} (${workflow.duration}).")
    } else {
        log.error("scpermut failed: see the error above and ${outdir}/pipeline_info; fix it and rerun with -resume.")
    }
}

// nf-schema reads a cell that looks like a number (sample `101`, unknown_label `-1`) as a
// number: schema_input.json accepts numbers for those columns, and here they become text
// again, as the `scpermut` flags, file names and joins expect.
def textMeta(samplesheet, Map meta, h5ad) {
    def text = meta.collectEntries { key, value -> [key, value instanceof Number ? value.toString() : value] }
    if (!(text.id ==~ /^[A-Za-z0-9][A-Za-z0-9._-]*$/)) {
        error("${samplesheet}: sample '${text.id}' must use only letters, digits, '.', '_' and '-'.")
    }
    return [text, h5ad.toString()]
}

// A samplesheet path is absolute, a URL (s3://, gs://, https://), or relative to the
// samplesheet's own folder, as in `scpermut run`.
def resolveSampleFile(samplesheet, String value, String sample) {
    def remote = value ==~ /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/.*/
    def path = remote || value.startsWith('/') ? file(value) : samplesheet.parent.resolve(value)
    if (!path.exists()) {
        error("${samplesheet}: file '${value}' of sample '${sample}' not found (${path}).")
    }
    return path
}

// Keep the exact parameters of the run next to its results.
def writeParams(outdir) {
    def info = file("${outdir}/pipeline_info")
    info.mkdirs()
    info.resolve("params_${params.trace_report_suffix}.json").text = groovy.json.JsonOutput.prettyPrint(groovy.json.JsonOutput.toJson(params))
}

// The non-default parameters of the run as a MultiQC custom-content section. What changes
// on every launch (run name, report suffix) is left out: the section feeds MULTIQC, which
// must stay cached on -resume when nothing else changed.
def workflowSummaryMultiqc(summary) {
    def perLaunch = ['runName', 'trace_report_suffix']
    def rows = summary.collect { _group, values ->
        values.findAll { name, _value -> !(name in perLaunch) }
            .collect { name, value -> "        <dt>${name}</dt><dd><samp>${value}</samp></dd>" }
            .join('\n')
    }.join('\n')
    return [
        "id: 'scpermut-scpermut-summary'",
        "description: 'parameters of this run (those that differ from the defaults).'",
        "section_name: 'scpermut workflow summary'",
        "plot_type: 'html'",
        "data: |",
        "    <dl class=\"dl-horizontal\">",
        rows,
        "    </dl>",
    ].join('\n')
}
