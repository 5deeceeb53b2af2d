/*
========================================================================================
    A stand-in for the four nf-schema functions the pipeline uses, for TESTS ONLY
========================================================================================
    nf-schema (the plugin nextflow.config declares) is published to the Nextflow plugin
    registry, not to Maven Central. Where neither it nor that registry can be had,
    tests/pipeline/test_nextflow_run.py runs a copy of the pipeline whose
    utils_scpermut_pipeline includes these functions instead, so every process still
    runs for real. They read the samplesheet as nf-schema does for this pipeline's
    assets/schema_input.json (meta keys, defaults, required columns, patterns, enums,
    unique samples) but are not nf-schema: the tests of nf-schema's own messages skip
    when it is absent. Never used by a user's run.
----------------------------------------------------------------------------------------
*/

def validateParameters() {
    log.warn('nf-schema is not installed: the test stand-in does not validate parameters.')
}

def paramsSummaryLog(metadata) {
    return "scpermut ${metadata.manifest.version} (nf-schema stand-in: parameter summary left out)"
}

def paramsSummaryMap(Map _options, _metadata) {
    return ['Input/output options': [input: params.input, outdir: params.outdir]]
}

def samplesheetToList(samplesheet, String schemaPath) {
    def schema = new groovy.json.JsonSlurper().parse(new File(schemaPath))
    def properties = schema.items.properties as Map
    def lines = file(samplesheet).readLines().findAll { line -> line.trim() }
    def header = lines[0].split(',', -1).collect { cell -> cell.trim() }
    def unknown = header - properties.keySet()
    if (unknown) {
        error("${samplesheet}: unknown column(s) ${unknown}")
    }
    def samples = []
    def seen = [] as Set
    lines.drop(1).each { line ->
        def cells = line.split(',', -1).collect { cell -> cell.trim() }
        def row = [:]
        header.eachWithIndex { name, column -> row[name] = column < cells.size() ? cells[column] : '' }
        def entry = "${samplesheet}: entry ${samples.size() + 1}"
        def meta = [:]
        def fields = []
        properties.each { name, spec ->
            def value = row[name] ?: spec.default
            checkCell(entry, name, value, spec, name in schema.items.required)
            if (spec.meta) {
                spec.meta.each { key -> meta[key] = value ?: null }
            } else if (value) {
                fields.add(value)
            }
        }
        if (!seen.add(meta.id)) {
            error("${entry}: sample '${meta.id}' appears twice")
        }
        samples.add([meta] + fields)
    }
    return samples
}

def checkCell(entry, name, value, spec, required) {
    if (!value && required) {
        error("${entry}: ${name} is required (${spec.errorMessage})")
    }
    if (value && spec.pattern && !(value ==~ spec.pattern)) {
        error("${entry}: ${name} '${value}' (${spec.errorMessage})")
    }
    if (value && spec['enum'] && !(value in spec['enum'])) {
        error("${entry}: ${name} '${value}' (${spec.errorMessage})")
    }
}
