"""Convert a vt-mm model for the runtimes that phones and edge devices use, and check each one.

    python tools/deployment/export.py CONFIG [--checkpoint CKPT]
        --backend onnxruntime openvino mnn ncnn tflite [--shape H W]
        [--output logits|labels|detections [--labels-upsample K]]
        [--precision fp32|int8|bf16 [--calib-images N]] [--threads T] --out-dir DIR

Writes each backend's files under DIR (``.onnx``, OpenVINO ``.xml``/``.bin``, ``.mnn``,
``.ncnn.param``/``.ncnn.bin``, ``.tflite``), runs each in its own runtime on the same random
normalised image as PyTorch eager and prints one line per backend with ``max_abs_diff`` (for
``--output labels`` also the share of pixels that agree with PyTorch) and its median latency.
Exits with status 1 if a backend fails or differs by more than 1e-4 (relative above 1).

The graph's input is the normalised NCHW image (float32, (pixel - mean) / std with the config's
data_preprocessor values, RGB) at the static ``--shape`` (default: the config's test size);
docs/en/user_guides/deployment.md says how an app feeds it. ``--output labels`` ends a segmentor in
argmax at the logits' resolution (``--labels-upsample K``: after a bilinear upsample of the logits
by K) and a nearest upsample to the input (int32). A detector's graph ends in its detections
(``--output detections``, its default: ``dets`` (1, K, 5) boxes in input pixels and scores,
``labels`` (1, K), ``num_dets``, and for Mask R-CNN ``masks`` (1, K, 28, 28) inside each box;
vt_mm.deploy.detection), compared with PyTorch detection by detection; runtimes without
NonMaxSuppression (ncnn, TFLite) are refused, naming the ones that run it; detectors the graph
does not take (anchor-free heads, cascades) export their backbone + neck features.
``--precision int8`` (or ``--int8``) quantizes with ``--calib-images`` images of the config's
training split through its test pipeline (onnxruntime and OpenVINO: QDQ; MNN: its mnnquant;
tflite: fully integer, PT2E). ``--precision bf16`` runs the
fp32 files in bf16 arithmetic (OpenVINO, on CPUs that have it).
A backend that does not list the precision is reported as failed, naming the ones that do.
Conversions run offline (no downloads, installs or telemetry). Without ``--checkpoint`` the
model is freshly initialised. The runtimes come with ``bash dev/setup_env.sh --deploy``.
"""
import argparse
import os
import os.path as osp
import sys

from vt_mm import analysis
from vt_mm.analysis import build_model, default_shape
from vt_mm.deploy.backends import BACKENDS, PRECISIONS
from vt_mm.deploy.calibration import calibration_images
from vt_mm.deploy.pipeline import deploy, files_in, remove_new_files


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--checkpoint', help='weights to load strictly')
    parser.add_argument('--backend', nargs='+', default=['onnxruntime'], choices=list(BACKENDS))
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help="the graph's static input size (default: the config's test size)")
    parser.add_argument('--output', choices=['logits', 'labels', 'detections'],
                        help='what the graph ends in: logits (default for segmentors and '
                        'classifiers), labels (segmentors: the argmax in the graph), detections '
                        '(default for detectors: boxes, scores, labels after NMS, Mask R-CNN\'s '
                        'masks); logits of a detector are its backbone + neck features')
    parser.add_argument('--labels-upsample', type=int, default=1, metavar='K',
                        help='--output labels: bilinear upsampling of the logits by K before '
                        "the argmax (1: none; the head's stride: mmseg's prediction)")
    parser.add_argument('--precision', choices=list(PRECISIONS), default='fp32',
                        help='int8: static quantization on calibration images; bf16: the fp32 '
                        'graph run in bf16 (OpenVINO on CPUs with bf16); other than fp32 the '
                        'differences are reported, not checked against 1e-4')
    parser.add_argument('--int8', action='store_true', help='the same as --precision int8')
    parser.add_argument('--calib-images', type=int, default=32,
                        help="calibration images from the config's training split (int8)")
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=10, help='timed runs per backend')
    parser.add_argument('--out-dir', required=True)
    parser.add_argument('--verbose', action='store_true',
                        help="also print mmengine's model-initialisation log")
    return parser.parse_args(argv)


# the graph's input side, in pixels: --shape outside it is refused before a model is built
MIN_SIDE, MAX_SIDE = 16, 8192


def check_args(args) -> None:
    """Refuses argument values no export can use, with what to pass instead (SystemExit)."""
    if args.int8:
        if args.precision not in ('fp32', 'int8'):
            sys.exit(f'[export] --int8 and --precision {args.precision} exclude each other: '
                     '--int8 is --precision int8')
        args.precision = 'int8'
    if args.shape is not None:
        bad = [side for side in args.shape if not MIN_SIDE <= side <= MAX_SIDE]
        if bad:
            sys.exit(f'[export] --shape {args.shape[0]} {args.shape[1]}: each side must be in '
                     f'[{MIN_SIDE}, {MAX_SIDE}] pixels (the graph is static at this size); '
                     'leave --shape out for the config\'s test size')
    for name in ('threads', 'repeats', 'calib_images', 'labels_upsample'):
        value = getattr(args, name)
        if value < 1:
            sys.exit(f'[export] --{name.replace("_", "-")} {value}: must be at least 1')
    if osp.exists(args.out_dir) and not osp.isdir(args.out_dir):
        sys.exit(f'[export] --out-dir {args.out_dir} is a file; give a folder (it is created if '
                 'missing)')


def default_output(model, toolbox: str) -> str:
    """What the graph ends in without ``--output``: the detections of a detector the
    detections graph takes (RetinaNet-like, Faster / Mask R-CNN), else logits (a detector's:
    its backbone + neck features)."""
    from vt_mm.deploy.detection import unsupported
    return 'detections' if toolbox == 'mmdet' and unsupported(model) is None else 'logits'


def check_checkpoint(path: str) -> None:
    """A file that is not a checkpoint, or weights with NaN/Inf: refused before anything is
    built or written."""
    from vt_mm.engine import checkpoints
    try:
        state = checkpoints.state_dict_of(checkpoints.read_checkpoint(path))
        checkpoints.check_finite(state, f'checkpoint {path}')
    except (checkpoints.CheckpointFileError, checkpoints.NonFiniteWeightsError) as e:
        sys.exit(f'[export] ERROR: {e}')


def check_memory(model, toolbox: str, output: str, shape) -> None:
    """Refuses a --shape whose activations would not fit in this machine's free memory (the
    export runs the network in PyTorch and then in each runtime), before allocating them."""
    from vt_mm.deploy.onnx import exportable
    available = analysis.available_memory_bytes()
    if available is None:
        return
    need = 2 * analysis.estimate_peak_bytes(exportable(model, toolbox, output).eval(), shape)
    if need > available:
        sys.exit(f'[export] --shape {shape[0]} {shape[1]} needs about {need / 2**30:.1f} GiB for '
                 f'the network\'s activations (estimated from small probes), and this machine '
                 f'has {available / 2**30:.1f} GiB free; export a smaller --shape')


def _remove_failed_files(report, out_dir: str, before: set) -> None:
    """No file of a failed backend stays behind; when every backend failed, neither do the
    graphs they were converted from."""
    if not any(r.ok for r in report.results):
        remove_new_files(out_dir, before)
        return
    for result in report.results:
        if not result.ok:
            for path in result.files:
                if osp.isfile(path):
                    os.remove(path)


def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    if args.checkpoint:
        check_checkpoint(args.checkpoint)
    model, cfg, toolbox = build_model(args.config, verbose=args.verbose)
    if args.checkpoint:
        from mmengine.runner import load_checkpoint
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()
    args.output = args.output or default_output(model, toolbox)
    if args.output == 'detections':
        from vt_mm.deploy.detection import unsupported
        if toolbox != 'mmdet':
            sys.exit(f'[export] --output detections is for detectors; {args.config} is an '
                     f'{toolbox} model (use --output logits)')
        if unsupported(model):
            sys.exit(f'[export] --output detections: {unsupported(model)}')
    shape = tuple(args.shape or default_shape(cfg, toolbox))
    check_memory(model, toolbox, args.output, shape)
    calibration = None
    if args.precision == 'int8':
        calibration = calibration_images(cfg, model, shape, args.calib_images)
    stem = osp.splitext(osp.basename(args.config.split('::')[-1]))[0]
    before = files_in(args.out_dir)
    try:
        report = deploy(model, args.backend, shape, args.out_dir, stem, toolbox=toolbox,
                        output=args.output, calibration=calibration, num_threads=args.threads,
                        repeats=args.repeats, labels_upsample=args.labels_upsample,
                        precision=args.precision)
    except BaseException:
        remove_new_files(args.out_dir, before)
        raise
    _remove_failed_files(report, args.out_dir, before)
    ops = ', '.join(f'{op} {n}' for op, n in report.op_counts.items())
    print(f'[export] {args.config} at {shape[0]}x{shape[1]}, output {args.output}'
          f'{", INT8" if args.precision == "int8" else ""}'
          f'{", bf16" if args.precision == "bf16" else ""}, {args.threads} '
          f'thread(s); ONNX ops: {ops}')
    failed = False
    for result in report.results:
        print(result.line())
        failed |= not result.ok
        if result.ok and result.warning():
            print(f'[export] WARNING {result.warning()}', file=sys.stderr)
    for result in report.results:  # what an app sets to compute as checked above
        settings = result.ok and BACKENDS[result.backend].app_settings(result.precision)
        if settings:
            print(f'[export] in your app, {result.backend}: {settings}')
    if failed:
        sys.exit('[export] a backend failed or differs from PyTorch by more than 1e-4 '
                 '(relative above 1; detections: a detection without its match)')


if __name__ == '__main__':
    main()
