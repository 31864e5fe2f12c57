"""``medai review …``: the Synthetic Data Review on the command line (one project file per review).

medai review init --project p.medai-review --name "lesion GAN v2"
medai review import --project p.medai-review --real ct1.nii.gz ct2/ --synthetic s1.nrrd --generator gan
medai review import --project p.medai-review --manifest images.csv
medai review generate --project p.medai-review --parent 1 --count 10 --output synthetic/
medai review grade --project p.medai-review --reviewer ann --image 3 --accept --realism 4
medai review metrics --project p.medai-review
medai review memorization --project p.medai-review [--threshold T]
medai review reader-study start --project p.medai-review --reviewer bob --export blinded/
medai review reader-study export --project p.medai-review --session 1 --export blinded/
medai review reader-study answer --project p.medai-review --session 1 --answers blinded/answers.csv
medai review reader-study stats --project p.medai-review
medai review export --project p.medai-review --output export/ [--exclude-near-copies]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from MedAIExtension.command_types import SetHandler, SubParsers
from MedAIExtension.errors import InputError, MedAIError

__all__ = ["add_review_parser"]


def _open(args: argparse.Namespace) -> Any:
    from MedAIExtension.review.store import ReviewStore

    return ReviewStore.open(args.project)


def _init(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.store import DEFAULT_ARTIFACTS, ReviewStore

    artifacts = [a.strip() for a in args.artifacts.split(",") if a.strip()] if args.artifacts else DEFAULT_ARTIFACTS
    with ReviewStore.create(args.project, args.name, artifacts=artifacts) as store:
        print(
            f"Created review project '{store.name}' in {args.project} (artifact flags: {', '.join(store.artifacts)})."
        )
    return 0


def _import(args: argparse.Namespace, bar: Any, _warn: Callable[[str], None]) -> int:
    with _open(args) as store:
        if args.manifest:
            report = store.import_manifest(args.manifest, reviewer=args.reviewer, progress=bar)
            print(report.summary())
            return 0 if not report.failed else 1
        provenance = {
            key: value
            for key, value in (("generator", args.generator), ("version", args.generator_version), ("seed", args.seed))
            if value is not None
        }
        if args.parent is not None:
            provenance["parent"] = args.parent
        if not (args.real or args.synthetic):
            raise InputError("Nothing to import: give --real PATH…, --synthetic PATH… or --manifest FILE.")
        for role, paths in (("real", args.real or []), ("synthetic", args.synthetic or [])):
            for path in paths:
                record = store.add_image(
                    path, role, provenance if role == "synthetic" else None, reviewer=args.reviewer
                )
                state = "already in the project" if record.duplicate else "added"
                print(f"  {role:<9} #{record.id:<4} {state}: {record.path}")
    return 0


def _generate(args: argparse.Namespace, bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.workflow import generate_lesions

    with _open(args) as store:
        records = generate_lesions(
            store, args.parent, args.count, args.output, seed=args.seed, reviewer=args.reviewer, progress=bar
        )
    for record in records:
        p = record.provenance
        print(f"  synthetic #{record.id}: {p.get('kind')} {p.get('diameter_mm', 0):.1f} mm nodule → {record.path}")
    return 0


def _grade(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
    accept = {"accept": True, "reject": False, "undecided": None}[args.decision]
    with _open(args) as store:
        grade = store.grade(
            args.image,
            args.reviewer,
            accept=accept,
            realism=args.realism,
            artifacts=args.artifact or (),
            comment=args.comment or "",
            seconds=args.seconds,
        )
    print(f"Graded image #{grade.image_id} for {grade.reviewer}: {args.decision}, realism {grade.realism}.")
    return 0


def _print_json_or(args: argparse.Namespace, data: dict[str, Any], lines: list[str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, default=str))
    else:
        print("\n".join(lines))


def _metrics(args: argparse.Namespace, bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.workflow import run_metrics

    with _open(args) as store:
        data = run_metrics(store, progress=bar)
    bar.close()
    lines = [f"{data['n_synthetic']} synthetic vs {data['n_real']} real images:"]
    for key, value in data.items():
        if isinstance(value, float):
            lines.append(f"  {key:<28} {value:.4g}")
        elif isinstance(value, dict):
            shown = ", ".join(f"{k} {v:.4g}" for k, v in value.items() if isinstance(v, float))
            if shown:
                lines.append(f"  {key:<28} {shown}")
    _print_json_or(args, data, lines)
    return 0


def _memorization(args: argparse.Namespace, bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.workflow import run_memorization

    with _open(args) as store:
        data = run_memorization(store, args.threshold, progress=bar)
    bar.close()
    flagged = data["flagged"]
    lines = [f"{len(flagged)} of {len(data['matches'])} synthetic images look like copies of a real image."]
    for row in flagged:
        lines.append(
            f"  synthetic #{row['synthetic_id']} ~ real #{row.get('real_id', '?')} (similarity {row['similarity']:.3f})"
        )
    _print_json_or(args, data, lines)
    return 0


def _reader_start(args: argparse.Namespace, bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.blinded_export import check_export_folder, export_blinded_session
    from MedAIExtension.review.workflow import start_reader_session

    with _open(args) as store:
        if args.export:
            check_export_folder(args.export)  # before the session exists: a bad folder creates nothing
        session = start_reader_session(store, args.reviewer, per_class=args.per_class, seed=args.seed)
        trials = store.reader_trials(session)
        print(
            f"Reader session {session} for {args.reviewer}: {len(trials)} images, real and synthetic in random order."
        )
        if args.export:
            try:
                sheet = export_blinded_session(store, session, args.export, progress=bar)
            except MedAIError as exc:
                raise type(exc)(
                    f"{exc} Reader session {session} was created without its export; once fixed, export it with: "
                    f"medai review reader-study export --project {args.project} --session {session} --export DIR"
                ) from None
            _print_export(args, bar, session, sheet)
    return 0


def _print_export(args: argparse.Namespace, bar: Any, session: int, sheet: Path) -> None:
    bar.close()
    print(
        f"Blinded images (one grid, voxel type and header for all) and an answer sheet are in "
        f"{sheet.parent}: fill 'said' (real/synthetic) and 'confidence' (1-5), then: medai review "
        f"reader-study answer --project {args.project} --session {session} --answers {sheet}"
    )


def _reader_export(args: argparse.Namespace, bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.blinded_export import export_blinded_session

    with _open(args) as store:
        if not any(s.id == args.session for s in store.reader_sessions()):
            raise InputError(
                f"The project has no reader session {args.session}; 'medai review reader-study stats' lists them."
            )
        sheet = export_blinded_session(store, args.session, args.export, progress=bar)
        _print_export(args, bar, args.session, sheet)
    return 0


def _reader_answer(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.blinded_export import read_answer_sheet

    with _open(args) as store:
        trials = store.reader_trials(args.session)
        answers = read_answer_sheet(args.answers, len(trials))  # the whole sheet is checked before storing any
        answered = 0
        for answer in answers:
            if trials[answer.index].said_synthetic is not None:
                continue  # answered before (a resumed sheet): answers are final
            store.answer_trial(args.session, answer.index, answer.said_synthetic, answer.confidence, None)
            answered += 1
    print(f"Recorded {answered} answer(s); {len(answers) - answered} row(s) answered before (answers are final).")
    return 0


def _reader_stats(args: argparse.Namespace, _bar: Any, _warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.workflow import reader_study_results

    with _open(args) as store:
        data = reader_study_results(store)
    pooled = data["pooled"]
    lines = [
        pooled["verdict"],
        f"  answers {pooled['n']}, accuracy {pooled['accuracy']:.3f} (95 % CI {pooled['ci_low']:.2f}–"
        f"{pooled['ci_high']:.2f}), p(accuracy > 50 %) = {pooled['p_greater']:.3g}",
    ]
    if "agreement" in data and data["agreement"].get("fleiss_kappa") is not None:
        lines.append(f"  Fleiss' kappa {data['agreement']['fleiss_kappa']:.3f}")
    _print_json_or(args, data, lines)
    return 0


def _export(args: argparse.Namespace, bar: Any, warn: Callable[[str], None]) -> int:
    from MedAIExtension.review.workflow import export_review

    warnings: list[str] = []
    with _open(args) as store:
        files = export_review(
            store,
            args.output,
            min_reviewers=args.min_reviewers,
            exclude_near_copies=args.exclude_near_copies,
            warn=warnings.append,
            progress=bar,
        )
    bar.close()
    for message in warnings:
        warn(message)
    for kind, path in files.items():
        print(f"  {kind:<14} {path}")
    return 0


def add_review_parser(sub: SubParsers, set_handler: SetHandler) -> None:
    """Register ``medai review`` and its sub-commands (see :mod:`MedAIExtension.command_types`)."""
    review = sub.add_parser("review", help="synthetic data review: grades, reader study, metrics, memorization")
    commands = review.add_subparsers(dest="review_command", required=True)

    def command(name: str, help_text: str, handler: Callable[..., int]) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--project", required=True, type=Path, help="review project file (SQLite)")
        parser.add_argument("--quiet", action="store_true", help="no progress bar")
        set_handler(parser, handler, bar="eager")
        return parser

    init = command("init", "create a review project", _init)
    init.add_argument("--name", required=True)
    init.add_argument("--artifacts", default=None, help="comma-separated artifact flags (default: a standard set)")

    imp = command("import", "add real / synthetic images (files, DICOM folders or a CSV/JSON manifest)", _import)
    imp.add_argument("--real", nargs="+", help="real reference images")
    imp.add_argument("--synthetic", nargs="+", help="synthetic images")
    imp.add_argument("--manifest", default=None, help="CSV/JSON manifest: path, role, generator, version, seed, parent")
    imp.add_argument("--generator", default=None)
    imp.add_argument("--generator-version", default=None)
    imp.add_argument("--seed", type=int, default=None)
    imp.add_argument("--parent", type=int, default=None, help="id of the real image the synthetic ones derive from")
    imp.add_argument("--reviewer", default=None)

    gen = command("generate", "insert synthetic nodules into a real image (built-in generator)", _generate)
    gen.add_argument("--parent", type=int, required=True, help="id of the real image")
    gen.add_argument("--count", type=int, default=5)
    gen.add_argument("--output", required=True, help="folder for the synthetic images")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--reviewer", default=None)

    grade = command("grade", "grade one image", _grade)
    grade.add_argument("--reviewer", required=True)
    grade.add_argument("--image", type=int, required=True)
    decision = grade.add_mutually_exclusive_group(required=True)
    for choice in ("accept", "reject", "undecided"):
        decision.add_argument(f"--{choice}", dest="decision", action="store_const", const=choice)
    grade.add_argument("--realism", type=int, default=None, help="1 (obviously synthetic) .. 5 (indistinguishable)")
    grade.add_argument("--artifact", action="append", help="artifact flag (repeat for several)")
    grade.add_argument("--comment", default=None)
    grade.add_argument("--seconds", type=float, default=None, help="time spent")

    met = command("metrics", "2.5D FID, MMD, MS-SSIM diversity, tissue histogram distances", _metrics)
    met.add_argument("--json", action="store_true")

    mem = command("memorization", "flag synthetic images that are near-copies of real ones", _memorization)
    mem.add_argument("--threshold", type=float, default=None)
    mem.add_argument("--json", action="store_true")

    reader = commands.add_parser("reader-study", help="blinded real-vs-synthetic reader study")
    steps = reader.add_subparsers(dest="reader_command", required=True)
    start = steps.add_parser("start", help="new balanced, randomised session (optionally export blinded images)")
    answer = steps.add_parser("answer", help="record a filled answer sheet (resumable)")
    export = steps.add_parser("export", help="blinded images and an answer sheet of an existing session")
    stats = steps.add_parser("stats", help="accuracy, binomial test, ROC, kappa")
    handlers = ((start, _reader_start), (answer, _reader_answer), (export, _reader_export), (stats, _reader_stats))
    for parser, handler in handlers:
        parser.add_argument("--project", required=True, type=Path)
        parser.add_argument("--quiet", action="store_true")
        set_handler(parser, handler, bar="eager")
    start.add_argument("--reviewer", required=True)
    start.add_argument("--per-class", type=int, default=None)
    start.add_argument("--seed", type=int, default=None)
    start.add_argument("--export", default=None, help="folder for blinded copies and an answer sheet")
    export.add_argument("--session", type=int, required=True)
    export.add_argument("--export", required=True, help="new or empty folder for blinded copies and an answer sheet")
    answer.add_argument("--session", type=int, required=True)
    answer.add_argument("--answers", required=True, help="answers.csv (trial, said, confidence)")
    stats.add_argument("--json", action="store_true")

    exp = command("export", "accepted subset as a training manifest + HTML review report", _export)
    exp.add_argument("--output", required=True)
    exp.add_argument("--min-reviewers", type=int, default=1)
    exp.add_argument(
        "--exclude-near-copies",
        action="store_true",
        help="leave images the memorization check flagged as near-copies of real images out of accepted.csv",
    )
