"""The `skyeye` command. Thin: it parses arguments and delegates to the library.

Heavy libraries (torch, transformers) are imported inside the sub-commands so that `skyeye --help`
answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
from pathlib import Path

from skyeye.prompts import PROMPT_STYLES

EXAMPLES = """examples:
  skyeye ask scene.jpg "[caption] Briefly describe this image."
  skyeye ask scene.jpg "where is the white plane?" --task grounding --draw boxes.png
  skyeye chat scene.tif
  skyeye web --port 7860
  skyeye map scene.tif --task detection --question "storage tank" --out tanks.gpkg
  skyeye serve --port 8000 --max-batch 8
  skyeye info skyeyegpt-7b
  skyeye convert skyeyegpt.pth --eva eva_vit_g.pth --llama Llama-2-7b-chat-hf --out skyeyegpt-7b/
"""


def _add_model_options(parser: argparse.ArgumentParser, model_help: str) -> None:
    from skyeye.model.config import preset_names

    parser.add_argument("--model", default=None, help=model_help.format(presets=", ".join(preset_names())))
    parser.add_argument("--eva", type=Path, help="EVA-CLIP-g weights (eva_vit_g.pth), for a released .pth")
    parser.add_argument("--llama", type=Path, help="Hugging Face LLaMA-2-chat folder, for a released .pth")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                        help="weights dtype (default: the model's; float16 runs as bfloat16 on a CPU)")  # fmt: skip
    parser.add_argument("--quantize", choices=("int8", "int4"),
                        help="store the LLM's Linear weights as integers: half (int8) or a quarter (int4, CPU "
                        "only) of their bfloat16 memory, answers close to unquantized ones")  # fmt: skip
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default cpu)")
    parser.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        help="skyeye: one <s> per turn, as MiniGPT-v2 trains; minigptv2: two <s> first, as MiniGPT-v2's "
        "evaluation and demo prompt (the default for a released checkpoint); default: the model's config",
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow .pth files holding Python objects beyond tensors (runs code from the file)",
    )


MODEL_HELP = (
    "a preset name ({presets}: random weights), a SkyEye checkpoint folder, or a released SkyEyeGPT/"
    "MiniGPT-v2 .pth (with --eva and --llama); default: the bundled trained model"
)


def _ranged(kind: type, low: float, high: float | None = None, *, low_excluded: bool = False):
    """An argparse type: a `kind` number from `low` (excluded if `low_excluded`) up to `high` (included)."""
    bounds = f"{'above' if low_excluded else 'at least'} {low}" + ("" if high is None else f" and at most {high}")

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of type {kind.__name__}") from None
        if value < low or (low_excluded and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {text}")
        return value

    return parse


POSITIVE_INT = _ranged(int, 1)


class _UsageError(Exception):
    """A command line argparse refuses; `main` reports it (as JSON too for `ask --json`) and exits 2."""

    def __init__(self, parser: argparse.ArgumentParser, message: str):
        super().__init__(message)
        self.parser = parser


class _Parser(argparse.ArgumentParser):
    # Sub-command parsers are made of the same class, so every usage error of every command passes here.
    def error(self, message: str):
        raise _UsageError(self, message)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("skyeye")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="skyeye",
        description="SkyEye: remote-sensing vision-language model (SkyEyeGPT).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and dropped")
    parser.add_argument("--version", action="version", version=f"skyeye {_version()}")
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
    ask.add_argument(
        "--draw",
        type=Path,
        help="write the image with the answer's boxes drawn to this file "
        "(.tif from a georeferenced raster: a GeoTIFF on the source's grid)",
    )
    ask.add_argument("--json", action="store_true", help="print a machine-readable JSON result")
    ask.add_argument("--max-new-tokens", type=POSITIVE_INT, default=64)
    ask.add_argument("--num-beams", type=POSITIVE_INT, default=1, help="beam search width (1: greedy)")
    ask.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    ask.add_argument(
        "--free-answers",
        action="store_true",
        help="let the answer to a question that lists classes say anything (default: one of the listed names)",
    )
    ask.add_argument(
        "--raw-boxes",
        action="store_true",
        help="keep the boxes as the decoder wrote them (default: a model with a box refiner moves them onto the "
        "objects it detects)",
    )
    ask.add_argument("--temperature", type=_ranged(float, 0, low_excluded=True), default=1.0)
    ask.add_argument("--top-p", type=_ranged(float, 0, 1, low_excluded=True), default=0.9)
    ask.add_argument("--seed", type=int, default=0, help="seed for sampling and for random preset weights")
    ask.add_argument("--max-pixels", type=POSITIVE_INT, help="refuse larger images (default 200 million pixels)")
    ask.set_defaults(run=run_ask)

    info = commands.add_parser(
        "info",
        help="print a model's architecture, parameter counts and model card",
        description="Print the architecture and the trainable / frozen parameter "
        "counts. Presets and checkpoint folders are built on the meta "
        "device: no weights are allocated. A checkpoint folder's model card "
        "(card.yaml: summary, scores, known limitations) is printed after them.",
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
    chat.add_argument("--max-new-tokens", type=POSITIVE_INT, default=128)
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
    web.add_argument("--port", type=_ranged(int, 1, 65535), default=7860)
    web.add_argument("--max-new-tokens", type=POSITIVE_INT, default=128)
    web.add_argument("--max-upload-mb", type=POSITIVE_INT, default=100, help="largest accepted upload (default 100 MB)")
    web.add_argument(
        "--max-pixels", type=POSITIVE_INT, default=100_000_000, help="largest accepted image (default 100 Mpx)"
    )
    web.add_argument(
        "--max-sessions", type=POSITIVE_INT, default=100,
        help="conversations kept at once, the least recently used forgotten first (default 100, ~4 MB each)",
    )  # fmt: skip
    web.set_defaults(run=run_web)
    _add_data_commands(commands)
    _add_train_commands(commands)
    _add_eval_commands(commands)
    _add_map_command(commands)
    _add_serve_command(commands)
    return parser


def _add_serve_command(commands) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve an OpenAI-compatible chat-completions API (batched)",
        description="Answer OpenAI chat-completions requests (GET /v1/models, POST /v1/chat/completions, GET "
        "/health) about images sent as data: URLs (PNG, JPEG, WebP, TIFF incl. GeoTIFF) or file:// URLs under "
        "--allowed-local-media-path; URLs are never fetched. Concurrent requests are answered together, up to "
        "--max-batch per generate call; boxes come in the message's `skyeye` field, with lon/lat for a GeoTIFF.",
    )
    _add_model_options(serve, MODEL_HELP)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=_ranged(int, 1, 65535), default=8000)
    serve.add_argument(
        "--api-key",
        default=os.environ.get("SKYEYE_API_KEY") or None,
        help="the key clients must send (Authorization: Bearer KEY); default: $SKYEYE_API_KEY, else no key",
    )
    serve.add_argument("--max-batch", type=POSITIVE_INT, default=8, help="requests per generate call (default 8)")
    serve.add_argument(
        "--max-queue", type=POSITIVE_INT, default=64,
        help="requests in progress at once (read, waiting or generating); more get 429 (default 64)",
    )  # fmt: skip
    serve.add_argument(
        "--batch-window-ms", type=_ranged(float, 0), default=100.0,
        help="how long a batch may wait for requests still being read or decoded (default 100 ms)",
    )  # fmt: skip
    serve.add_argument(
        "--max-new-tokens", type=POSITIVE_INT, default=256, help="answer length when a request sets no max_tokens"
    )
    serve.add_argument("--max-upload-mb", type=_ranged(float, 0, low_excluded=True), default=20.0,
                       help="largest accepted image in MB (default 20)")  # fmt: skip
    serve.add_argument(
        "--max-pixels", type=POSITIVE_INT, default=100_000_000, help="largest accepted image (default 100 Mpx)"
    )
    serve.add_argument(
        "--allowed-local-media-path", type=Path, metavar="DIR",
        help="accept file:// image URLs of files in this folder (default: none accepted)",
    )  # fmt: skip
    serve.set_defaults(run=run_serve)


def run_serve(args) -> int:
    from skyeye.serve.api.app import DEFAULT_MODEL_ID, ServeSettings, serve

    settings = ServeSettings(
        model_id=args.model or DEFAULT_MODEL_ID, api_key=args.api_key or None, max_batch=args.max_batch,
        max_queue=args.max_queue, batch_window_ms=args.batch_window_ms, max_new_tokens=args.max_new_tokens,
        max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
        allowed_local_media_path=args.allowed_local_media_path,
    )  # fmt: skip
    settings.media_limits()  # a wrong folder is reported before the model loads
    if args.api_key is None and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"skyeye: note: serving on {args.host} without --api-key: anyone who reaches the port can use it",
              file=sys.stderr)  # fmt: skip
    serve(_load(args), settings, args.host, args.port)
    return 0


MAP_EXAMPLES = """examples:
  skyeye map scene.tif --task detection --question "storage tank" --out tanks.gpkg
  skyeye map S2_patch_folder/ --task caption --bands B04,B03,B02 --stretch 0,3000 --out captions.geojson
  skyeye map "tiles/*.tif" --task scene --tile-size 256 --overlap 32 --gsd 0.3 --out scenes.fgb
  accelerate launch -m skyeye.cli map "tiles/*.tif" --task caption --out captions.gpkg   # many processes

Per-tile tasks (caption, vqa, scene) write each tile's polygon with its answer; grounding and detection write
one polygon per object, its boxes merged across tile overlaps and seams. A killed run resumes from
LAYER.parts/ when started again with the same options.
"""


def _add_map_command(commands) -> None:
    from skyeye.geo.features import MAP_TASKS
    from skyeye.geo.layer import DRIVERS
    from skyeye.geo.tiles import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE

    map_ = commands.add_parser(
        "map",
        help="ask the model about every tile of whole georeferenced scenes and write a map layer",
        description="Tile one or many scenes (GeoTIFF or any raster GDAL reads, or a folder of single-band "
        "files such as a Sentinel-2 / BigEarthNet patch), read window by window with one stretch per scene, ask "
        "the model in batches and write the answers as features in the raster's CRS: GeoPackage (.gpkg), "
        "FlatGeobuf (.fgb), or GeoJSON (.geojson, in WGS84 lon/lat as RFC 7946 wants). Prints the bands used "
        "and the counts of tiles, skipped tiles, dropped boxes and features.",
        epilog=MAP_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    map_.add_argument("scenes", nargs="+", metavar="SCENE", help="raster files, band folders or glob patterns")
    map_.add_argument("--task", required=True, choices=list(MAP_TASKS), help="what to ask about each tile")
    map_.add_argument(
        "--question",
        help="the question (vqa), phrase (detection) or expression (grounding); caption and scene have defaults",
    )
    map_.add_argument(
        "--classes",
        help="with --task scene: the legend, comma-separated (e.g. 'forest, farmland, river, dense residential'); "
        "each tile is asked the standard class-list question and labelled with one of these names",
    )
    map_.add_argument("--out", type=Path, required=True, help=f"the layer to write ({', '.join(DRIVERS)})")
    map_.add_argument(
        "--bands",
        help="red,green,blue (or one band) by 1-based number or name, e.g. 4,3,2 or B04,B03,B02 (default: by "
        "colour interpretation, band description or Sentinel-2 name, else the first three)",
    )
    map_.add_argument(
        "--stretch",
        metavar="LO,HI",
        help="map LO..HI to 0..255 for every band, e.g. 0,3000 for reflectance (default: 2-98 percentile of the "
        "whole scene; 8-bit bands kept as is)",
    )
    map_.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE, help="tile side in model pixels")
    map_.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="overlap of neighbouring tiles in pixels")
    map_.add_argument(
        "--gsd",
        type=float,
        help="resample tiles to this many metres per pixel (default: the scene's own; the bundled model was trained "
        "on UCM's 0.3 m)",
    )
    map_.add_argument("--batch-size", type=int, default=8, help="tiles per generate call (default 8)")
    _add_model_options(map_, MODEL_HELP)
    map_.add_argument("--max-new-tokens", type=int, default=64)
    map_.add_argument("--no-progress", action="store_true", help="no progress bar")
    map_.set_defaults(run=run_map)


def _add_eval_commands(commands) -> None:
    import textwrap

    from skyeye.eval.suites import suite_names

    evaluate = commands.add_parser(
        "eval",
        help="run a benchmark suite, or rescore saved predictions",
        description="Ask the model every item of a benchmark's native split (configs/eval/suites.yaml), write "
        "OUT/predictions.jsonl and OUT/metrics.json, and print the paper's table with SkyEyeGPT's numbers beside "
        "ours. OUT/run.json records what produced the predictions (model fingerprint, prompt style, split, limit, "
        "data, decoding); an interrupted run resumes them, another run refuses unless --restart. `skyeye eval "
        "score PREDICTIONS` rescores a predictions file without a model; `skyeye eval list` lists the suites.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  skyeye eval ucm-captions --data-root ../shared/data --split val\n"
        "  skyeye eval nwpu-vhr10-grounding --data-root ../shared/data\n"
        "  skyeye eval score runs/eval/ucm-captions/predictions.jsonl\n"
        "suites (configs/eval/suites.yaml):\n"
        + textwrap.fill(
            ", ".join(suite_names()), 100, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False
        ),
    )
    evaluate.add_argument("suite", help="a suite name, `score` or `list`")
    evaluate.add_argument("predictions", nargs="?", type=Path, help="with `score`: a predictions.jsonl")
    _add_model_options(evaluate, MODEL_HELP)
    evaluate.add_argument("--data-root", type=Path, help="the folder holding the datasets (required to run a suite)")
    evaluate.add_argument("--split", help="the split to read (default: the suite's test split)")
    evaluate.add_argument("--out", type=Path, help="output folder (default runs/eval/SUITE)")
    evaluate.add_argument("--limit", type=POSITIVE_INT, help="only the first N items")
    evaluate.add_argument(
        "--restart",
        action="store_true",
        help="discard the predictions in --out and start afresh (default: resume them, only if OUT/run.json "
        "records the same model, prompt style, split, limit, data and decoding)",
    )
    evaluate.add_argument(
        "--batch-size", type=POSITIVE_INT, default=16, help="questions per generate call (default 16)"
    )
    evaluate.add_argument("--max-new-tokens", type=POSITIVE_INT, default=64)
    evaluate.add_argument("--num-beams", type=POSITIVE_INT, default=1, help="beam search width (default 1: greedy)")
    evaluate.add_argument(
        "--free-answers",
        action="store_true",
        help="let answers to a question that lists classes say anything, as SkyEyeGPT's own evaluation does "
        "(default: one of the listed names, as `skyeye ask`, chat, the web app and the API answer)",
    )
    evaluate.add_argument(
        "--raw-boxes",
        action="store_true",
        help="score the boxes as the decoder wrote them, as SkyEyeGPT's own evaluation does (default: a model "
        "with a box refiner moves them onto the objects it detects, as every front end does)",
    )
    evaluate.add_argument("--spice", action="store_true", help="also SPICE for captions (needs its model download)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(run=run_eval)


def _add_train_commands(commands) -> None:
    train = commands.add_parser(
        "train",
        help="instruction-tune a model on built records (stage 1 or 2; one process or `accelerate launch`)",
        description="Train from a YAML config (see configs/train/), or from several in turn: the stages of a recipe, "
        "each starting from the model the one before wrote (its `model` names the earlier `out`/final). Overrides "
        "after the configs: KEY=VALUE with dotted keys, e.g. steps=200 optim.lr=3e-4 out=runs/try, applied to every "
        "stage (`model` and `out` only to a single config). Multi-process: `accelerate launch -m skyeye.cli train "
        "...` or `torchrun --nproc-per-node N -m skyeye.cli train ...`.",
    )
    train.add_argument("configs", nargs="+", metavar="CONFIG",
                       help="training config YAMLs, run in order, then KEY=VALUE overrides")  # fmt: skip
    train.add_argument("--resume", action="store_true",
                       help="continue each stage from the latest checkpoint in its `out` (a finished stage only "
                       "writes its final model again)")  # fmt: skip
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
    from skyeye.serve.chat import run_chat as chat

    # The streams of the moment, not those of import time (a caller may have redirected them).
    return chat(_load(args), args.image, lines=sys.stdin, out=sys.stdout, max_new_tokens=args.max_new_tokens)


def run_web(args) -> int:
    import tempfile

    from skyeye.model.card import read_card
    from skyeye.model.loading import default_source
    from skyeye.serve.web.app import serve

    examples = Path(tempfile.gettempdir()) / "skyeye-web-examples"
    card = read_card(args.model or default_source())
    serve(_load(args), args.host, args.port, examples, args.max_upload_mb, max_sessions=args.max_sessions,
          max_new_tokens=args.max_new_tokens, max_pixels=args.max_pixels, card=card)  # fmt: skip
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
    from skyeye.model.loading import default_source

    if args.device == "cuda" and int(os.environ.get("LOCAL_RANK", "-1")) >= 0:
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per process under accelerate launch

    return commands.evaluate(
        args.suite, lambda: _load(args), args.data_root, args.out, split=args.split, limit=args.limit,
        batch_size=args.batch_size, progress=not args.no_progress, spice=args.spice, restart=args.restart,
        model_source=args.model or default_source(), max_new_tokens=args.max_new_tokens, num_beams=args.num_beams,
        listed_only=not args.free_answers, refine_boxes=not args.raw_boxes,
    )  # fmt: skip


def run_train(args) -> int:
    from skyeye.train.config import load_stages
    from skyeye.train.loop import train_stages

    first_override = next((i for i, item in enumerate(args.configs) if "=" in item), len(args.configs))
    configs, overrides = args.configs[:first_override], args.configs[first_override:]
    overrides += ["cache_visual=true"] if args.cache_visual else []
    train_stages(load_stages(configs, overrides), resume=args.resume, progress=not args.no_progress)
    return 0


def run_plot(args) -> int:
    from skyeye.train.plot import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def _add_data_commands(commands) -> None:
    from skyeye.data.recipe import bundled_recipes

    replace = "replace the records (and for synth the scenes) of an earlier build in --out instead of refusing"
    data = commands.add_parser(
        "data",
        help="build, synthesize and inspect instruction data (SkyEye-968k)",
        description="Turn native remote-sensing datasets into unified instruction records.",
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="build the records of a recipe from the native datasets under a data root",
        description="Read every source of RECIPE from DATA_ROOT and write record shards, stats.json,\n"
        "rejects.jsonl (one line per skipped item, with the reason) and a table comparing\n"
        "the counts with the paper's. Sources missing from disk are reported and skipped;\n"
        "none on disk is an error. Every image is decoded once: truncated or corrupt ones\n"
        "are rejected with the reason.",
        epilog="bundled recipes (src/skyeye/configs/data/):\n" + "".join(f"  {name}\n" for name in bundled_recipes()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("recipe", help="a recipe YAML file, or the name of a bundled recipe (listed below)")
    build.add_argument("--root", type=Path, required=True, help="the data root the recipe's paths are relative to")
    build.add_argument("--out", type=Path, required=True, help="output folder")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.add_argument("--overwrite", action="store_true", help=replace)
    build.set_defaults(run=run_data_build)
    synth = actions.add_parser(
        "synth",
        help="render synthetic top-down scenes with exact boxes and records for every task",
        description="Render N scenes per split (terrain, roads, water, buildings, vehicles, planes, ships, "
        "storage tanks, ...) and write records for captioning, counting and presence VQA, grounding, "
        "referring expressions, phrase grounding and conversations. Deterministic per seed.",
    )
    synth.add_argument("--n", type=POSITIVE_INT, required=True, help="scenes per split")
    synth.add_argument("--out", type=Path, required=True, help="output folder (images and records)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=POSITIVE_INT, default=256, help="image side in pixels")
    synth.add_argument("--splits", nargs="+", default=["train"], choices=["train", "val", "test"])
    synth.add_argument("--no-progress", action="store_true", help="no progress bars")
    synth.add_argument("--overwrite", action="store_true", help=replace)
    synth.set_defaults(run=run_data_synth)
    show = actions.add_parser(
        "show",
        help="print records, or draw one with its boxes",
        description="Print the first records of a built folder or shard, or the "
        "record --id, and with --png draw it with its boxes.",
    )
    show.add_argument("folder", type=Path, help="a folder written by `data build`/`data synth`, or a .jsonl shard")
    show.add_argument("-n", "--count", type=POSITIVE_INT, default=3, help="how many records to print")
    show.add_argument("--id", dest="record_id", help="the record to print")
    show.add_argument("--png", type=Path, help="draw the (first matching) record's image with its boxes here")
    show.add_argument("--root", type=Path, help="data root (default: the one in the folder's stats.json)")
    show.set_defaults(run=run_data_show)


def run_data_build(args) -> int:
    from skyeye.data import commands

    commands.build(args.recipe, args.root, args.out, progress=not args.no_progress, overwrite=args.overwrite)
    return 0


def run_data_synth(args) -> int:
    from skyeye.data import commands

    commands.synth(args.n, args.out, args.seed, args.size, tuple(args.splits), progress=not args.no_progress,
                   overwrite=args.overwrite)  # fmt: skip
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
        prompt_style=args.prompt_style,
        merge_lora=True,  # every command that loads through here only answers
        quantize=args.quantize,
    )


def run_map(args) -> int:
    import os

    from skyeye.geo.commands import run_map as map_command
    from skyeye.model.loading import default_source

    if args.device == "cuda" and int(os.environ.get("LOCAL_RANK", "-1")) >= 0:
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"  # one GPU per process under accelerate launch
    return map_command(args, lambda: _load(args), str(args.model or default_source()))


def run_ask(args) -> int:
    from skyeye.geo.georef import georeference_of
    from skyeye.images import DEFAULT_MAX_PIXELS, load_image

    image = load_image(args.image, max_pixels=args.max_pixels or DEFAULT_MAX_PIXELS)
    georeference = georeference_of(image)  # None unless a raster with a CRS whose pixels are the image's
    if args.draw:
        _check_writable_image(args.draw)  # before the model answers: a late failure would lose the answer
    model = _load(args)
    generation = {
        "max_new_tokens": args.max_new_tokens,
        "num_beams": args.num_beams,
        "listed_only": not args.free_answers,
        "refine_boxes": not args.raw_boxes,
    }
    if args.sample:
        import torch

        torch.manual_seed(args.seed)
        generation.update(do_sample=True, temperature=args.temperature, top_p=args.top_p)
    answer = model.ask(image, args.question, task=args.task, **generation)
    if args.draw:
        from skyeye.draw import draw_boxes
        from skyeye.geo.drawing import save_drawing

        how = save_drawing(draw_boxes(image.image, answer.boxes), args.draw, georeference, args.image)
        count = len(answer.boxes)
        drawn = f"{count} box{'es' if count > 1 else ''} drawn to {args.draw}"
        drawn = drawn if count else f"no boxes in the answer; {args.draw} written without boxes"
        print(drawn + (f" ({how})" if how else ""), file=sys.stderr)
    if args.json:
        result = answer.to_dict()
        result.update(image=str(args.image), image_size=list(image.original_size), rendering=image.rendering)
        if georeference is not None:
            result["georeference"] = georeference.describe()
            for entry, box in zip(result["boxes"], answer.boxes, strict=True):
                entry.update(georeference.box_coordinates(box.pixels))
        print(json.dumps(result, ensure_ascii=False))
        return 0
    print(answer.text)
    for number, box in enumerate(answer.boxes, 1):
        print(box.summary(number))
        for line in georeference.box_lines(box.pixels) if georeference else []:
            print(f"  {line}")
    return 0


def _check_writable_image(path: Path) -> None:
    from PIL import Image

    Image.init()
    if Image.registered_extensions().get(path.suffix.lower()) not in Image.SAVE:
        kind = path.suffix or "a file without an extension"
        raise ValueError(f"--draw {path}: PIL cannot write {kind}; use .png or .jpg")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"--draw {path}: no folder {path.parent} to write it in")


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
    argv = sys.argv[1:] if argv is None else list(argv)
    # `ask --json` is read by programs: each of its errors is also a JSON object on stdout.
    commands = [word for word in argv if not word.startswith("-")]
    as_json = commands[:1] == ["ask"] and "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except _UsageError as err:
        err.parser.print_usage(sys.stderr)
        _report_error(str(err), as_json, err.parser.prog)
        raise SystemExit(2) from None
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="skyeye: %(message)s")
    try:
        return args.run(args)
    except BrokenPipeError:  # the reader left early (`skyeye data show ... | head`): nothing went wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the final flush cannot fail again
        return 0
    except (ValueError, OSError) as err:
        # Every error the library raises for bad input is a ValueError or OSError naming the file or field.
        if args.verbose:
            raise
        _report_error(str(err), as_json)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: the user knows why it stopped, a traceback tells them nothing
        print(file=sys.stderr)
        _report_error("interrupted", as_json)
        return 130
    except Exception as err:  # a bug: its traceback follows, but a program reading JSON still gets an object
        if as_json:
            print(json.dumps({"error": f"internal error: {type(err).__name__}: {err}"}))
        raise
    finally:
        # What is alive now lives until exit: the interpreter's last garbage collection then skips the millions
        # of objects torch and transformers made (it was 15% of a `skyeye ask`).
        gc.freeze()


def _report_error(message: str, as_json: bool, prog: str = "skyeye") -> None:
    print(f"{prog}: {'' if message == 'interrupted' else 'error: '}{message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message}, ensure_ascii=False))


def run_as_program() -> None:
    """The `skyeye` program: main(), and after Ctrl-C an exit without the interpreter's teardown. A native thread
    pool still busy when the signal came (torch's, mid-answer) made that teardown abort the process in about 1 run
    of 25 ("terminate called without an active exception", status -6 instead of 130)."""
    status = main()
    if status == 130:
        with contextlib.suppress(OSError):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(130)
    sys.exit(status)


if __name__ == "__main__":
    run_as_program()
