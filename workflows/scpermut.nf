/*
========================================================================================
    SCPERMUT: QC per sample -> PREPARE -> [--tune N: TUNE_PLAN -> N x TUNE_TRIAL -> TUNE_SELECT]
              -> TRAIN (or --model) -> PREDICT -> REPORT -> MULTIQC
========================================================================================
*/

include { SCPERMUT_QC      } from '../modules/local/qc/main'
include { SCPERMUT_PREPARE } from '../modules/local/prepare/main'
include { SCPERMUT_TUNE_PLAN   } from '../modules/local/tune_plan/main'
include { SCPERMUT_TUNE_TRIAL  } from '../modules/local/tune_trial/main'
include { SCPERMUT_TUNE_SELECT } from '../modules/local/tune_select/main'
include { SCPERMUT_TRAIN   } from '../modules/local/train/main'
include { SCPERMUT_PREDICT } from '../modules/local/predict/main'
include { SCPERMUT_REPORT  } from '../modules/local/report/main'
include { MULTIQC_VERSION  } from '../modules/local/multiqc_version/main'
include { MULTIQC          } from '../modules/local/multiqc/main'

workflow SCPERMUT {

    take:
    ch_samples           // channel: [ val(meta), path(h5ad) ], one item per samplesheet row, in order
    model_dir            // path: a saved model folder (--model), or null to train one
    multiqc_config       // path: the pipeline's MultiQC config
    extra_multiqc_config // value channel: the user's MultiQC config (--multiqc_config), or []
    workflow_summary     // value channel: run parameters as MultiQC custom-content YAML

    main:

    // One QC task per sample, all in parallel.
    SCPERMUT_QC(ch_samples)

    if (model_dir) {
        // Mapping onto a saved model: the reference is frozen and every new batch gets an
        // adapter of its own, so each sample is prepared, mapped and reported in its own
        // tasks, in parallel; meta.folder makes the modules write (and so publish) their
        // outputs under <step>/<sample>/.
        ch_qc_h5ads = SCPERMUT_QC.out.h5ad
            .map { meta, h5ad -> [meta + [folder: "${meta.id}/"], [h5ad]] }
    } else {
        // Merge in samplesheet order, whatever order the QC tasks finish in: the merged
        // file, and so -resume and the results, must not depend on task timing.
        ch_sample_rank = ch_samples
            .map { meta, _h5ad -> meta.id }
            .toList()
            .flatMap { ids -> ids.withIndex().collect { id, rank -> [id, rank] } }
        // One merged dataset and one model per run: a value channel (one sorted list), so
        // PREPARE's and TRAIN's outputs are value channels too and every later step reads
        // them however many tasks it runs, with no `.first()` (which would warn).
        ch_qc_h5ads = SCPERMUT_QC.out.h5ad
            .map { meta, h5ad -> [meta.id, h5ad] }
            .join(ch_sample_rank)
            .toSortedList { a, b -> a[2] <=> b[2] }
            .map { rows -> [[id: 'merged'], rows.collect { row -> row[1] }] }
    }
    SCPERMUT_PREPARE(ch_qc_h5ads)
    ch_prepared = SCPERMUT_PREPARE.out.h5ad

    // Map onto a given model without retraining, or train one on the merged cells.
    ch_model = model_dir ? channel.value(model_dir) : channel.empty()
    ch_tune_multiqc = channel.empty()
    if (!model_dir) {
        // --tune N: N trials drawn up front from the seed, one task each (one GPU each under
        // -profile gpu), then the best trial's options train the model.
        ch_best_params = channel.value([])
        if (params.tune.toInteger() > 0) {
            SCPERMUT_TUNE_PLAN(params.tune.toInteger())
            ch_trials = SCPERMUT_TUNE_PLAN.out.trials
                .flatten()
                .map { trial -> [[id: trial.baseName], trial] }
            SCPERMUT_TUNE_TRIAL(ch_trials, ch_prepared.map { _meta, h5ad -> h5ad })
            // In trial order, whatever order the trials finish in, so -resume finds TUNE_SELECT.
            ch_scores = SCPERMUT_TUNE_TRIAL.out.score
                .toSortedList { a, b -> a[0].id <=> b[0].id }
                .map { rows -> rows.collect { row -> row[1] } }
            SCPERMUT_TUNE_SELECT(ch_scores)
            ch_best_params = SCPERMUT_TUNE_SELECT.out.best_params
            ch_tune_multiqc = SCPERMUT_TUNE_SELECT.out.multiqc_files
        }
        SCPERMUT_TRAIN(ch_prepared, ch_best_params)
        ch_model = SCPERMUT_TRAIN.out.model.map { _meta, model -> model }
    }

    SCPERMUT_PREDICT(ch_prepared, ch_model)
    SCPERMUT_REPORT(SCPERMUT_PREDICT.out.h5ad, ch_model)

    // MultiQC's own version comes from a task of its image that does not read the
    // versions topic, so it joins the topic without waiting on itself.
    MULTIQC_VERSION()

    // Software versions of every step, one YAML block per process, for MultiQC.
    ch_versions = channel.topic('versions')
        .unique()
        .map { task_name, tool, version -> [task_name.tokenize(':').last(), "    ${tool}: ${version}"] }
        .mix(channel.of(
            ['Workflow', "    scpermut: ${workflow.manifest.version}"],
            ['Workflow', "    Nextflow: ${workflow.nextflow.version}"],
        ))
        .groupTuple()
        .map { step, lines -> "${step}:\n${lines.unique().sort().join('\n')}" }
        .collectFile(
            storeDir: "${params.outdir}/pipeline_info",
            name: 'scpermut_software_mqc_versions.yml',
            sort: true,
            newLine: true,
        )

    // Sorted by path (each file's task folder is named by its inputs' hash), not by the order
    // tasks finish in: MULTIQC stages them in that order, and -resume must find the same task.
    ch_multiqc_files = SCPERMUT_REPORT.out.multiqc_files.flatten()
        .mix(ch_tune_multiqc)
        .mix(ch_versions)
        .mix(workflow_summary.collectFile(name: 'workflow_summary_mqc.yaml'))
        .collect(sort: true)

    MULTIQC(ch_multiqc_files, multiqc_config, extra_multiqc_config)

    emit:
    annotated      = SCPERMUT_PREDICT.out.h5ad   // channel: [ val(meta), path(annotated.h5ad) ]
    labels         = SCPERMUT_PREDICT.out.labels // channel: [ val(meta), path(labels.tsv) ]
    report         = SCPERMUT_REPORT.out.html    // channel: [ val(meta), path(report.html) ]
    multiqc_report = MULTIQC.out.report          // channel: path(multiqc_report.html)
}
