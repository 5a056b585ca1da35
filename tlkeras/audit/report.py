"""The audit's report: ``audit.json`` (everything), ``audit.md`` (the summary and tables) and a
self-contained ``audit.html`` (jinja2; thumbnails inline as base64 JPEG, no external requests).

Side effects: :func:`write_report` writes those three files into the folder it is given (the
caller stages that folder and renames it into place).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

__all__ = ["write_report", "summary_paragraph", "markdown"]

THUMB_PX = 112


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary_paragraph(findings: dict, report_dir: Path | str) -> str:
    """One paragraph with every count and the path of ``audit.html``."""
    counts = findings["counts"]
    splits = ", ".join(f"{k} {v}" for k, v in counts["per_split"].items())
    by = findings["near_duplicates_by"]["method"]
    leak = findings["leakage"]
    leak_text = "; ".join(
        f"{v['images']} {pair.split('-')[1]} image(s) have a copy in {pair.split('-')[0]}" for pair, v in leak.items()
    ) or "no leakage between splits"
    if findings["label_audit"] == "done":
        labels = f"{_plural(len(findings['label_issues']), 'likely label error')} (probe accuracy {findings['probe_accuracy']:.2f})"
        outliers = _plural(len(findings["outliers"]), "outlier")
    else:
        labels, outliers = f"label errors {findings['label_audit']}", "outliers not searched"
    stats = findings["image_stats"]
    balance = findings["class_balance"]
    extra = []
    if stats.get("grayscale"):
        extra.append(f"{len(stats['grayscale'])} grayscale")
    if stats.get("alpha"):
        extra.append(f"{len(stats['alpha'])} with alpha")
    return (
        f"Audited {counts['images']} images ({splits}) of {findings['source']} "
        + (f"with {findings['backbone']} features " if by == "embedding" else "without pretrained features ")
        + f"in {findings['timings'].get('total_before_report', 0):.1f} s: "
        f"{_plural(len(findings['exact_duplicates']), 'exact-duplicate group')}, "
        f"{_plural(len(findings['near_duplicates']), 'near-duplicate pair')} (by {by}); {leak_text}; {labels}; {outliers}; "
        f"{_plural(len(findings['unreadable']), 'unreadable file')}"
        + (f"; {', '.join(extra)} image(s)" if extra else "")
        + f"; largest/smallest train class {balance['train_max_over_min']:.2f}"
        + (" (imbalanced)" if balance["imbalanced"] else "")
        + f". {len(findings['flagged'])} items flagged. Report: {Path(report_dir) / 'audit.html'}"
    )


def _name(findings: dict, i: int) -> str:
    it = findings["items"][i]
    return f"#{i} {it['split']}/{it['class']} {it.get('relpath') or ''}".strip()


def markdown(findings: dict, report_dir: Path | str) -> str:
    """The report as Markdown: summary, counts, and one table per kind of finding."""
    names = findings["class_names"]
    lines = ["# Data audit", "", summary_paragraph(findings, report_dir), "", "## Images per class", ""]
    splits = list(findings["counts"]["per_class"])
    lines += ["| class | " + " | ".join(splits) + " |", "|---|" + "---|" * len(splits)]
    for c, name in enumerate(names):
        lines.append(f"| {name} | " + " | ".join(str(findings["counts"]["per_class"][s][c]) for s in splits) + " |")
    stats = findings["image_stats"]
    if stats.get("count"):
        lines += ["", "## Files", "",
                  f"- formats: {stats['formats']}; colour modes: {stats['modes']}",
                  f"- width {stats['width']['min']}-{stats['width']['max']} px, height {stats['height']['min']}-"
                  f"{stats['height']['max']} px (shorter side median {stats['shorter_side']['median']:.0f}); "
                  f"largest aspect ratio {stats['aspect_ratio_max']:.2f}",
                  f"- grayscale: {len(stats['grayscale'])}, alpha: {len(stats['alpha'])}, animated: {len(stats['animated'])}, "
                  f"unreadable (skipped): {len(findings['unreadable'])}"]
        lines += [f"  - unreadable: {p}" for p in findings["unreadable"][:50]]
    lines += ["", "## Leakage between splits", ""]
    if findings["leakage"]:
        lines += [f"- {pair}: {v['pairs']} pairs, {v['images']} held-out images with a copy" for pair, v in findings["leakage"].items()]
    else:
        lines.append("None found.")
    lines += ["", "## Exact duplicates (identical files)", ""]
    lines += ["- " + ", ".join(_name(findings, i) for i in g) for g in findings["exact_duplicates"]] or ["None found."]
    lines += ["", f"## Near-duplicates (by {findings['near_duplicates_by']['method']})", ""]
    if findings["near_duplicates"]:
        lines += ["| similarity | hash bits apart | a | b |", "|---|---|---|---|"]
        lines += [f"| {p['similarity']:.3f} | {p['phash_distance']} | {_name(findings, p['a'])} | {_name(findings, p['b'])} |"
                  for p in findings["near_duplicates"]]
    else:
        lines.append("None found.")
    lines += ["", "## Likely label errors", ""]
    if findings["label_issues"]:
        lines += ["| item | given | suggested | P(given) | P(suggested) |", "|---|---|---|---|---|"]
        lines += [
            f"| {_name(findings, x['index'])} | {names[x['given']]} | {names[x['suggested']]} | "
            f"{x['given_probability']:.2f} | {x['suggested_probability']:.2f} |" for x in findings["label_issues"]
        ]
    else:
        lines.append("None found." if findings["label_audit"] == "done" else findings["label_audit"].capitalize() + ".")
    lines += ["", "## Outliers (far from every class)", ""]
    if findings["outliers"]:
        lines += [f"- {_name(findings, x['index'])}: distance {x['distance']:.3f}, closest class {names[x['nearest_class']]}"
                  for x in findings["outliers"]]
    else:
        lines.append("None found." if findings["label_audit"] == "done" else "Not searched.")
    return "\n".join(lines) + "\n"


class _Thumbnails:
    """Base64 JPEG thumbnails, made once per item: from the file (true aspect ratio) when there
    is one, else from the decoded image."""

    def __init__(self, findings: dict, images):
        self.items = findings["items"]
        self.images = images
        self.cache: dict[int, str] = {}

    def __call__(self, i: int) -> str:
        i = int(i)
        if i not in self.cache:
            from PIL import Image, ImageOps

            img = None
            path = self.items[i].get("path")
            if path:
                try:
                    with Image.open(path) as src:
                        img = ImageOps.exif_transpose(src.convert("RGB"))
                except Exception:  # noqa: BLE001 - fall back to the decoded copy
                    img = None
            if img is None:
                img = Image.fromarray(self.images[i])
            img.thumbnail((THUMB_PX, THUMB_PX))
            buffer = io.BytesIO()
            img.save(buffer, "JPEG", quality=80)
            self.cache[i] = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
        return self.cache[i]


def _html(findings: dict, images, limit: int, report_dir) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tlkeras.audit", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )
    thumbs = _Thumbnails(findings, images)
    names = findings["class_names"]

    def card(i, note=""):
        it = findings["items"][int(i)]
        return {"src": thumbs(i), "id": int(i), "split": it["split"], "cls": it["class"], "path": it.get("relpath") or "", "note": note}

    def neighbours(i):
        return [card(j, f"sim {s:.2f}") for j, s in findings["neighbours"].get(str(i), [])]

    sections = []
    groups = [[card(i) for i in g] for g in findings["exact_duplicates"][:limit]]
    sections.append({"title": "Exact duplicates", "rows": groups, "total": len(findings["exact_duplicates"]),
                     "blurb": "Files with identical bytes."})
    near = sorted(findings["near_duplicates"], key=lambda p: (not p["cross_split"], -p["similarity"]))
    sections.append({
        "title": "Near-duplicates", "total": len(near),
        "blurb": "Pairs of re-encoded, resized or cropped copies; pairs across splits (leakage) first.",
        "rows": [[card(p["a"]), card(p["b"], f"sim {p['similarity']:.3f}, hash {p['phash_distance']} bits"
                                     + (" (across splits)" if p["cross_split"] else ""))]
                 for p in near[:limit]],
    })
    sections.append({
        "title": "Likely label errors", "total": len(findings["label_issues"]),
        "blurb": "Each image, labelled as given, then its nearest neighbours in feature space.",
        "rows": [[card(x["index"], f"given {names[x['given']]}, suggested {names[x['suggested']]} "
                                   f"({x['suggested_probability']:.2f})")] + neighbours(x["index"])
                 for x in findings["label_issues"][:limit]],
    })
    sections.append({
        "title": "Outliers", "total": len(findings["outliers"]),
        "blurb": "Images far from every class, then typical images of the closest class.",
        "rows": [[card(x["index"], f"distance {x['distance']:.3f}")]
                 + [card(j, f"typical {names[x['nearest_class']]}") for j in findings["class_examples"].get(str(x["nearest_class"]), [])]
                 for x in findings["outliers"][:limit]],
    })
    stats = findings["image_stats"]
    odd = [("grayscale", stats.get("grayscale", [])), ("alpha", stats.get("alpha", [])), ("animated", stats.get("animated", []))]
    sections.append({
        "title": "Grayscale, alpha and animated images", "total": sum(len(v) for _, v in odd),
        "blurb": "Converted to RGB when loaded (alpha composited on white, first frame of an animation).",
        "rows": [[card(i, kind)] for kind, ids in odd for i in ids[:limit]],
    })
    template = env.get_template("audit.html.j2")
    return template.render(
        f=findings, summary=summary_paragraph(findings, report_dir), sections=sections, limit=limit,
        per_class=findings["counts"]["per_class"], names=names,
    )


def write_report(folder: Path, findings: dict, images, thumbnails: int, report_dir: Path | None = None) -> None:
    """Writes ``audit.json``, ``audit.md`` and ``audit.html`` into ``folder``.

    ``report_dir`` is the folder's final path, named in the summaries (default: ``folder``).
    """
    from tlkeras.runs import atomic_write_text, write_json

    shown = report_dir or folder
    write_json(folder / "audit.json", findings)
    atomic_write_text(folder / "audit.md", markdown(findings, shown))
    atomic_write_text(folder / "audit.html", _html(findings, images, thumbnails, shown))
