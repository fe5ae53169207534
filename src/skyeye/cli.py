"""The `skyeye` command. Thin: it parses arguments and delegates to the library.

Heavy libraries (torch, transformers) are imported inside the sub-commands so that `skyeye --help`
answers at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXAMPLES = """examples:
  skyeye ask scene.jpg "[caption] Briefly describe this image."
  skyeye ask scene.jpg "where is the white plane?" --task grounding --draw boxes.png
  skyeye chat scene.tif
  skyeye web --port 7860
  skyeye info skyeyegpt-7b
  skyeye convert skyeyegpt.pth --eva eva_vit_g.pth --llama Llama-2-7b-chat-hf --out skyeyegpt-7b/
"""


def _add_model_options(parser: argparse.ArgumentParser, model_help: str) -> None:
    parser.add_argument("--model", default=None, help=model_help)
    parser.add_argument("--eva", type=Path, help="EVA-CLIP-g weights (eva_vit_g.pth), for a released .pth")
    parser.add_argument("--llama", type=Path, help="Hugging Face LLaMA-2-chat folder, for a released .pth")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="weights dtype")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow .pth files holding Python objects beyond tensors (runs code from the file)",
    )


MODEL_HELP = (
    "a preset name (tiny, skyeyegpt-7b), a SkyEye checkpoint folder, or a released SkyEyeGPT/"
    "MiniGPT-v2 .pth (with --eva and --llama); default: the bundled model"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skyeye",
        description="SkyEye: remote-sensing vision-language model (SkyEyeGPT).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and dropped")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser(
        "ask",
        help="ask one question about an image",
        description="Answer a question about an image and list the boxes in pixels.",
    )
    ask.add_argument("image", type=Path, help="PNG, JPEG, TIFF incl. 16-bit, multi-band GeoTIFF, ...")
    ask.add_argument("question", help='e.g. "[caption] Briefly describe this image."')
    from skyeye.prompts import TASKS

    ask.add_argument(
        "--task",
        choices=list(TASKS),
        help="prefix the question with this task's identifier (unless it has one already)",
    )
    _add_model_options(ask, MODEL_HELP)
    ask.add_argument("--draw", type=Path, help="write the image with the answer's boxes drawn to this file")
    ask.add_argument("--json", action="store_true", help="print a machine-readable JSON result")
    ask.add_argument("--max-new-tokens", type=int, default=64)
    ask.add_argument("--num-beams", type=int, default=1, help="beam search width (1: greedy)")
    ask.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    ask.add_argument("--temperature", type=float, default=1.0)
    ask.add_argument("--top-p", type=float, default=0.9)
    ask.add_argument("--seed", type=int, default=0, help="seed for sampling and for random preset weights")
    ask.add_argument("--max-pixels", type=int, help="refuse larger images (default 200 million pixels)")
    ask.set_defaults(run=run_ask)

    info = commands.add_parser(
        "info",
        help="print a model's architecture and parameter counts",
        description="Print the architecture and the trainable / frozen parameter "
        "counts. Presets and checkpoint folders are built on the meta "
        "device: no weights are allocated.",
    )
    info.add_argument("model", nargs="?", default=None, help="a preset name or a checkpoint folder")
    info.set_defaults(run=run_info)

    convert = commands.add_parser(
        "convert",
        help="turn a released SkyEyeGPT/MiniGPT-v2 checkpoint into a SkyEye checkpoint folder",
        description="Load the released .pth with EVA-CLIP-g and LLaMA-2-chat and "
        "save one self-contained SkyEye folder (LoRA kept separate).",
    )
    convert.add_argument("checkpoint", type=Path, help="the released .pth (its ['model'] dict)")
    convert.add_argument("--eva", type=Path, required=True, help="eva_vit_g.pth")
    convert.add_argument("--llama", type=Path, required=True, help="Hugging Face LLaMA-2-chat folder")
    convert.add_argument("--out", type=Path, required=True, help="output folder")
    convert.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="weights dtype")
    convert.add_argument("--trust-pickle", action="store_true", help="allow pickled objects in the .pth")
    convert.set_defaults(run=run_convert)
    chat = commands.add_parser(
        "chat",
        help="talk about an image in the terminal",
        description="A multi-turn conversation about one image, answers streamed as they are generated and "
        "boxes listed in pixels. Commands: /task NAME, /image PATH, /reset, /save FILE, /help, /quit. Reads "
        "questions from a pipe too (no prompts are printed then).",
    )
    chat.add_argument("image", type=Path, help="PNG, JPEG, TIFF incl. 16-bit, multi-band GeoTIFF, ...")
    _add_model_options(chat, MODEL_HELP)
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.set_defaults(run=run_chat)
    web = commands.add_parser(
        "web",
        help="serve the web chatbot (Gradio)",
        description="A web app to upload an image (PNG, JPEG, TIFF incl. 16-bit and multi-band GeoTIFF), pick a "
        "task, see answers streamed and every box drawn on the image, and go on with the conversation. "
        "Answers are generated one at a time; other requests wait in a queue.",
    )
    _add_model_options(web, MODEL_HELP)
    web.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    web.add_argument("--port", type=int, default=7860)
    web.add_argument("--max-new-tokens", type=int, default=128)
    web.add_argument("--max-upload-mb", type=int, default=100, help="largest accepted upload (default 100 MB)")
    web.add_argument("--max-pixels", type=int, default=100_000_000, help="largest accepted image (default 100 Mpx)")
    web.set_defaults(run=run_web)
    _add_data_commands(commands)
    _add_train_commands(commands)
    _add_eval_commands(commands)
    return parser


def _add_eval_commands(commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="run a benchmark suite, or rescore saved predictions",
        description="Ask the model every item of a benchmark's native split (configs/eval/suites.yaml), write "
        "OUT/predictions.jsonl and OUT/metrics.json, and print the paper's table with SkyEyeGPT's numbers beside "
        "ours. Interrupted runs resume from the predictions file. `skyeye eval score PREDICTIONS` rescores a "
        "predictions file without a model; `skyeye eval list` lists the suites.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  skyeye eval ucm-captions --data-root ../shared/data --split val\n"
        "  skyeye eval score runs/eval/ucm-captions/predictions.jsonl",
    )
    evaluate.add_argument("suite", help="a suite name, `score` or `list`")
    evaluate.add_argument("predictions", nargs="?", type=Path, help="with `score`: a predictions.jsonl")
    _add_model_options(evaluate, MODEL_HELP)
    evaluate.add_argument("--data-root", type=Path, help="the folder holding the datasets (required to run a suite)")
    evaluate.add_argument("--split", help="the split to read (default: the suite's test split)")
    evaluate.add_argument("--out", type=Path, help="output folder (default runs/eval/SUITE)")
    evaluate.add_argument("--limit", type=int, help="only the first N items")
    evaluate.add_argument("--batch-size", type=int, default=16, help="questions per generate call (default 16)")
    evaluate.add_argument("--max-new-tokens", type=int, default=64)
    evaluate.add_argument("--num-beams", type=int, default=1, help="beam search width (default 1: greedy)")
    evaluate.add_argument("--spice", action="store_true", help="also SPICE for captions (needs its model download)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=run_eval)


def _add_train_commands(commands) -> None:
    train = commands.add_parser(
        "train",
        help="instruction-tune a model on built records (stage 1 or 2; one process or `accelerate launch`)",
        description="Train from a YAML config (see configs/train/). Overrides: KEY=VALUE with dotted keys, "
        "e.g. steps=200 optim.lr=3e-4 out=runs/try. Multi-process: `accelerate launch -m skyeye.cli train ...` "
        "or `torchrun --nproc-per-node N -m skyeye.cli train ...`.",
    )
    train.add_argument("config", type=Path, help="a training config YAML")
    train.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config fields to override")
    train.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in `out`")
    train.add_argument("--cache-visual", action="store_true", help="compute the frozen tower's features once")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=run_train)
    plot = commands.add_parser(
        "plot",
        help="draw a run's loss and learning-rate curves to a PNG",
        description="Reads RUN_DIR/metrics.jsonl and writes RUN_DIR/curves.png (or --out).",
    )
    plot.add_argument("run_dir", type=Path, help="a training run folder")
    plot.add_argument("--out", type=Path, help="PNG path (default RUN_DIR/curves.png)")
    plot.set_defaults(run=run_plot)


def run_chat(args) -> int:
    from skyeye.chat import run_chat as chat

    return chat(_load(args), args.image, max_new_tokens=args.max_new_tokens)


def run_web(args) -> int:
    import tempfile

    from skyeye.web.app import serve

    examples = Path(tempfile.gettempdir()) / "skyeye-web-examples"
    serve(_load(args), args.host, args.port, examples, args.max_upload_mb,
          max_new_tokens=args.max_new_tokens, max_pixels=args.max_pixels)  # fmt: skip
    return 0


def run_eval(args) -> int:
    from skyeye.eval import commands

    if args.suite == "list":
        return commands.list_suites()
    if args.suite == "score":
        if args.predictions is None:
            raise SystemExit("skyeye eval score: give the predictions.jsonl to rescore")
        return commands.rescore(args.predictions, args.spice)
    if args.data_root is None:
        raise SystemExit(f"skyeye eval {args.suite}: --data-root is required (the folder holding the datasets)")
    return commands.evaluate(
        args.suite, lambda: _load(args), args.data_root, args.out, split=args.split, limit=args.limit,
        batch_size=args.batch_size, progress=not args.no_progress, spice=args.spice,
        max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
    )  # fmt: skip


def run_train(args) -> int:
    from skyeye.train.config import TrainConfig
    from skyeye.train.loop import train

    overrides = list(args.overrides) + (["cache_visual=true"] if args.cache_visual else [])
    train(TrainConfig.load(args.config, overrides), resume=args.resume, progress=not args.no_progress)
    return 0


def run_plot(args) -> int:
    from skyeye.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def _add_data_commands(commands) -> None:
    data = commands.add_parser(
        "data",
        help="build, synthesize and inspect instruction data (SkyEye-968k)",
        description="Turn native remote-sensing datasets into unified instruction records.",
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="build the records of a recipe from the native datasets under a data root",
        description="Read every source of RECIPE from DATA_ROOT and write record shards, stats.json, "
        "rejects.jsonl (one line per skipped item, with the reason) and a table comparing the counts "
        "with the paper's. Sources missing from disk are reported and skipped.",
    )
    build.add_argument("recipe", help="a recipe YAML file, or a bundled recipe name (skyeye-968k, shared-data)")
    build.add_argument("--root", type=Path, required=True, help="the data root the recipe's paths are relative to")
    build.add_argument("--out", type=Path, required=True, help="output folder")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.set_defaults(run=run_data_build)
    synth = actions.add_parser(
        "synth",
        help="render synthetic top-down scenes with exact boxes and records for every task",
        description="Render N scenes per split (terrain, roads, water, buildings, vehicles, planes, ships, "
        "storage tanks, ...) and write records for captioning, counting and presence VQA, grounding, "
        "referring expressions, phrase grounding and conversations. Deterministic per seed.",
    )
    synth.add_argument("--n", type=int, required=True, help="scenes per split")
    synth.add_argument("--out", type=Path, required=True, help="output folder (images and records)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=256, help="image side in pixels")
    synth.add_argument("--splits", nargs="+", default=["train"], choices=["train", "val", "test"])
    synth.add_argument("--no-progress", action="store_true", help="no progress bars")
    synth.set_defaults(run=run_data_synth)
    show = actions.add_parser(
        "show",
        help="print records, or draw one with its boxes",
        description="Print the first records of a built folder or shard, or the "
        "record --id, and with --png draw it with its boxes.",
    )
    show.add_argument("folder", type=Path, help="a folder written by `data build`/`data synth`, or a .jsonl shard")
    show.add_argument("-n", "--count", type=int, default=3, help="how many records to print")
    show.add_argument("--id", dest="record_id", help="the record to print")
    show.add_argument("--png", type=Path, help="draw the (first matching) record's image with its boxes here")
    show.add_argument("--root", type=Path, help="data root (default: the one in the folder's stats.json)")
    show.set_defaults(run=run_data_show)


def run_data_build(args) -> int:
    from skyeye.data import commands

    commands.build(args.recipe, args.root, args.out, progress=not args.no_progress)
    return 0


def run_data_synth(args) -> int:
    from skyeye.data import commands

    commands.synth(args.n, args.out, args.seed, args.size, tuple(args.splits), progress=not args.no_progress)
    return 0


def run_data_show(args) -> int:
    from skyeye.data import commands

    commands.show(args.folder, args.count, args.record_id, args.png, args.root)
    return 0


def _load(args):
    from skyeye.model.loading import default_source, is_preset, load_model

    source = args.model or default_source()
    if is_preset(source):
        print(
            f"skyeye: note: model {source!r} is a preset with RANDOM weights, so its answers are meaningless; "
            "leave out --model for the bundled trained model, or pass a checkpoint folder.",
            file=sys.stderr,
        )
    return load_model(
        source,
        eva=args.eva,
        llama=args.llama,
        dtype=args.dtype,
        device=args.device,
        allow_pickle=args.trust_pickle,
        seed=getattr(args, "seed", 0),
    )


def run_ask(args) -> int:
    from skyeye.images import DEFAULT_MAX_PIXELS, load_image

    image = load_image(args.image, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    model = _load(args)
    generation = {"max_new_tokens": args.max_new_tokens, "num_beams": args.num_beams}
    if args.sample:
        import torch

        torch.manual_seed(args.seed)
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    answer = model.ask(image, args.question, task=args.task, **generation)
    if args.draw:
        from skyeye.draw import draw_boxes

        draw_boxes(image.image, answer.boxes).save(args.draw)
    if args.json:
        result = answer.to_dict()
        result.update(image=str(args.image), image_size=list(image.original_size), rendering=image.rendering)
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(answer.text)
    for number, box in enumerate(answer.boxes, 1):
        print(box.summary(number))
    if args.draw:
        print(f"boxes drawn to {args.draw}", file=sys.stderr)
    return 0


def run_info(args) -> int:
    from skyeye.model.info import describe
    from skyeye.model.loading import default_source

    print(describe(args.model or default_source()))
    return 0


def run_convert(args) -> int:
    from skyeye.model.release import load_release

    model = load_release(args.checkpoint, args.eva, args.llama, dtype=args.dtype, allow_pickle=args.trust_pickle)
    model.save_pretrained(args.out)
    print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="skyeye: %(message)s")
    try:
        return args.run(args)
    except (ValueError, OSError) as err:
        # Every error the library raises for bad input is a ValueError or OSError naming the file or field.
        if args.verbose:
            raise
        print(f"skyeye: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
