process SCPERMUT_QC {
    tag "${meta.id}"
    label 'process_low'

    conda "${moduleDir}/environment.yml"
    container 'ghcr.io/scpermut/scpermut:0.1.0'

    input:
    tuple val(meta), path(h5ad)

    output:
    tuple val(meta), path("${meta.id}.qc.h5ad")        , emit: h5ad
    tuple val(meta), path("${meta.id}.qc_metrics.tsv") , emit: metrics
    tuple val(meta), path("${meta.id}.qc_summary.json"), emit: summary
    tuple val(meta), path("${meta.id}.qc_*.png")       , emit: plots
    tuple val("${task.process}"), val('scpermut'), eval('scpermut --version | sed "s/^scpermut, version //"'), emit: versions_scpermut, topic: versions

    when:
    task.ext.when == null || task.ext.when

    script:
    def args = task.ext.args ?: ''
    // Columns and layer come from the samplesheet row; unset ones keep scpermut's defaults.
    def sample_args = [
        meta.batch_col     ? "--batch_col '${meta.batch_col}'"         : '',
        meta.label_col     ? "--label_col '${meta.label_col}'"         : '',
        meta.unknown_label ? "--unknown_label '${meta.unknown_label}'" : '',
        meta.condition     ? "--condition '${meta.condition}'"         : '',
        meta.layer         ? "--layer '${meta.layer}'"                 : '',
    ].join(' ').trim()
    """
    scpermut qc \\
        ${h5ad} \\
        --sample '${meta.id}' \\
        --role ${meta.role} \\
        --outdir . \\
        ${sample_args} \\
        ${args}
    """

    stub:
    """
    touch ${meta.id}.qc.h5ad
    touch ${meta.id}.qc_metrics.tsv
    touch ${meta.id}.qc_summary.json
    touch ${meta.id}.qc_violin.png
    touch ${meta.id}.qc_scatter.png
    """
}
