"""The unlabelled-data techniques by subcommand name, and how a result is printed (no TensorFlow import).
"""

from __future__ import annotations

__all__ = ['TECHNIQUES', 'print_summary']


# subcommand -> (method name of train_with_unlabeled, options class path, one-line description)
TECHNIQUES = {
    "dann": ("dann", "tlkeras.adapt.domain:DomainAdaptationOptions", "domain adaptation with gradient reversal and a domain discriminator"),
    "mmd": ("mmd", "tlkeras.adapt.domain:DomainAdaptationOptions", "domain adaptation with a multi-kernel MMD loss on features"),
    "importance": ("importance", "tlkeras.adapt.importance:ImportanceWeightingOptions", "source images weighted by a domain classifier"),
    "pseudo-label": ("pseudo_label", "tlkeras.adapt.semisupervised:PseudoLabelOptions", "iterated self-training with confident pseudo-labels"),
    "fixmatch": ("fixmatch", "tlkeras.adapt.semisupervised:FixMatchOptions", "FixMatch weak/strong consistency on unlabelled images"),
    "simclr": ("simclr", "tlkeras.adapt.simclr:SimCLROptions", "SimCLR contrastive pretraining, linear probes, then the fine-tune"),
}


def print_summary(result) -> None:
    """Prints a technique's result: accuracies, the technique's own numbers, time, run directory."""
    m = result.metrics
    print(f"val accuracy {m['val']['accuracy']:.3f} | {m['final_split']} accuracy {m['final']['accuracy']:.3f} | macro F1 {m['final']['f1_macro']:.3f}")
    if "target" in m:
        print(f"target accuracy {m['target']['accuracy']:.3f} ({m['target']['count']} labelled target images)")
    if "importance" in m:
        imp = m["importance"]
        print(f"domain classifier AUC {imp['domain_auc']:.3f} | effective sample size {imp['effective_sample_size']:.1f}")
    if "rounds" in m:
        for r in m["rounds"][1:]:
            print(f"round {r['round']}: {r['pseudo_labels']} pseudo-labels | val accuracy {r.get('val_accuracy', float('nan')):.3f}")
    if "linear_probe" in m:
        lp = m["linear_probe"]
        print(f"linear probe on {lp['split']}: {lp['before']['accuracy']:.3f} before SimCLR, {lp['after']['accuracy']:.3f} after")
    print(f"total {result.timings['total']:.1f}s")
    if result.run_dir is not None:
        print(f"run directory: {result.run_dir}")
