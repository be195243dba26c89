"""What a trained segmentor or detector scores after deployment, on the config's validation
split, against the toolbox's own prediction of the same checkpoint.

Segmentors: every backend's labels graph and, for INT8, its quantized logits graph, against
mmseg's own prediction (bilinear resize of the logits, then argmax). Detectors: every
backend's detections graph (vt_mm.deploy.detection), scored by the config's own test evaluator
(mmdet's CocoMetric: box AP, and mask AP for Mask R-CNN) next to mmdet's prediction of the
checkpoint in PyTorch (what tools/test.py scores), with the share of images whose detections
are mmdet's (same count and classes, IoU >= 0.99, scores within 1e-3, masks >= 99% equal).

    python tools/deployment/deploy_accuracy.py CONFIG CHECKPOINT
        [--backend onnxruntime openvino mnn ncnn tflite] [--labels-upsample 1 2 4 8]
        [--int8-backend onnxruntime openvino mnn tflite] [--calib-images 32]
        [--bf16-backend openvino] [--max-images N]
        [--runs 10] [--out-dir DIR]

Prints a markdown table: per runtime and graph (labels fp32, for each ``--labels-upsample``
factor; logits fp32, INT8 and bf16, whose logits go through mmseg's post-processing) the mIoU on
the
validation split, the share of pixels equal to mmseg's prediction of the PyTorch model, and the
median single-thread latency, every graph timed alternately in one run. INT8 calibration
uses ``--calib-images`` images of the training split (through the test pipeline), never the
validation images it is scored on.
Runs outside the test suite (benchmarks/reports/deployment.md has the numbers).
"""
import argparse
import os.path as osp
import sys
from typing import Dict

import torch

from vt_mm.analysis import build_model, time_alternately
from vt_mm.deploy import accuracy, detection_accuracy, exportable
from vt_mm.deploy.backends import BACKENDS, running_in
from vt_mm.deploy.calibration import calibration_images
from vt_mm.deploy.pipeline import DeployReport, deploy, load_runners


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--backend', nargs='+', default=list(BACKENDS), choices=list(BACKENDS))
    int8, bf16 = ([b for b, c in BACKENDS.items() if p in c.precisions] for p in ('int8', 'bf16'))
    parser.add_argument('--int8-backend', nargs='*', default=int8, choices=int8,
                        help='backends whose logits graph is also quantized to INT8 '
                        '(default: every backend that lists int8)')
    parser.add_argument('--labels-upsample', type=int, nargs='+', default=[1, 2, 4, 8],
                        metavar='K', help='labels graphs: bilinear upsampling of the logits '
                        'by K before the argmax (one graph per K)')
    parser.add_argument('--calib-images', type=int, default=32)
    parser.add_argument('--bf16-backend', nargs='*', default=bf16, choices=bf16,
                        help='backends whose logits graph also runs in bf16 (default: every '
                        'backend that lists bf16; skipped where the CPU has no bf16)')
    parser.add_argument('--max-images', type=int, help='validation images (default: all)')
    parser.add_argument('--runs', type=int, default=10, help='timed runs per graph')
    parser.add_argument('--out-dir', default='work_dirs/deploy_accuracy')
    return parser.parse_args(argv)


def loaded(report: DeployReport):
    """backend -> single-thread runner of each backend that converted and matches PyTorch
    (the others are reported)."""
    for result in report.results:
        if not result.ok:
            print(f'[deploy_accuracy] {result.line()}', file=sys.stderr)
    return load_runners(report, num_threads=1)


def main(argv=None):
    args = parse_args(argv)
    model, cfg, toolbox = build_model(args.config)
    if toolbox not in ('mmseg', 'mmdet'):
        sys.exit(f'[deploy_accuracy] {args.config} is neither a segmentor nor a detector '
                 f'(toolbox {toolbox})')
    from mmengine.runner import load_checkpoint
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()
    torch.set_num_threads(1)
    if toolbox == 'mmdet':
        return detector_rows(args, model, cfg)
    samples = accuracy.val_samples(cfg, model, args.max_images)
    shape = static_shape(samples)
    stem = osp.splitext(osp.basename(args.config))[0]
    out = osp.join(args.out_dir, stem)

    runners, outputs = {}, {}

    def add(name, run, output):
        runners[name], outputs[name] = run, output

    logits_net = exportable(model, toolbox, 'logits').eval()
    add('PyTorch | logits | fp32', lambda x: [logits_net(torch.from_numpy(x)).numpy()], 'logits')
    for k in args.labels_upsample:
        graph = 'labels' if k == 1 else f'labels, logits x{k} bilinear'
        net = exportable(model, toolbox, 'labels', logits_upsample=k).eval()
        add(f'PyTorch | {graph} | fp32', lambda x, net=net: [net(torch.from_numpy(x)).numpy()],
            'labels')
        for backend, run in loaded(deploy(model, args.backend, shape, out, stem,
                                          toolbox=toolbox, output='labels', repeats=1,
                                          labels_upsample=k)).items():
            add(f'{backend} | {graph} | fp32', run, 'labels')
    reduced_precision = {}  # precision -> the backends that run it here
    for precision, names in (('int8', args.int8_backend), ('bf16', args.bf16_backend)):
        reduced_precision[precision], why_not = running_in(precision, names)
        for backend, why in why_not.items():
            print(f'[deploy_accuracy] no {precision} rows for {backend}: {why}',
                  file=sys.stderr)
    int8, bf16 = reduced_precision['int8'], reduced_precision['bf16']
    reduced = list(dict.fromkeys(int8 + bf16))  # their fp32 logits rows
    if reduced:
        report = deploy(model, reduced, shape, out, stem, toolbox=toolbox, repeats=1)
        for backend, run in loaded(report).items():
            add(f'{backend} | logits | fp32', run, 'logits')
        # bf16: the same fp32 files, compiled for bf16 arithmetic
        for backend, run in load_runners(report, precision='bf16', backends=bf16).items():
            add(f'{backend} | logits | bf16', run, 'logits')
    if int8:
        calibration = calibration_images(cfg, model, shape, args.calib_images)
        for backend, run in loaded(deploy(model, int8, shape, out, stem, toolbox=toolbox,
                                          precision='int8', calibration=calibration,
                                          repeats=1)).items():
            add(f'{backend} | logits | INT8', run, 'logits')

    names = list(runners)
    example = samples[0].inputs
    with torch.no_grad():
        times = time_alternately([lambda run=runners[n]: run(example) for n in names], args.runs,
                                 2, 'cpu', label=stem)
        predictors = accuracy.predictors(model, runners, outputs)
        num_classes = model.decode_head.num_classes
        ignore_index = model.decode_head.ignore_index
        scores = {n: accuracy.score(predictors[n], samples, num_classes, ignore_index)
                  for n in names}
    reference = accuracy.score(lambda s: s.mmseg_pred, samples, num_classes, ignore_index)
    print(f'\n{stem}: {len(samples)} validation images at {shape[0]}x{shape[1]}, mmseg predict '
          f'(PyTorch, bilinear then argmax) mIoU {reference.miou:.2f}%; 1 thread\n')
    print('| runtime | graph | precision | mIoU % | agreement with mmseg % | ms |')
    print('|---|---|---|---|---|---|')
    for name, t in zip(names, times):
        s = scores[name]
        print(f'| {name} | {s.miou:.2f} | {s.agreement:.2f} | {1000 * t[0]:.1f} |')


def static_shape(samples) -> tuple:
    """The one input size of every sample (the deployed graphs are static)."""
    shape = tuple(samples[0].inputs.shape[-2:])
    if any(tuple(s.inputs.shape[-2:]) != shape for s in samples):
        sys.exit('[deploy_accuracy] the test pipeline gives inputs of several sizes; the '
                 'deployed graphs are static: use a Resize to a fixed scale (keep_ratio=False)')
    return shape


def detector_rows(args, model, cfg) -> Dict[str, Dict[str, float]]:
    """The detector's table: box (and mask) AP per runtime's detections graph, next to mmdet's
    prediction; returns row name -> metrics."""
    from vt_mm.deploy.detection import output_names
    samples, dataset_meta = detection_accuracy.val_samples(cfg, model, args.max_images)
    shape = static_shape(samples)
    stem = osp.splitext(osp.basename(args.config))[0]
    # mmdet clips boxes to the resized image inside the batch padding: so does the graph
    image_shape = tuple(samples[0].data_sample.img_shape[:2])
    if any(tuple(s.data_sample.img_shape[:2]) != image_shape for s in samples):
        sys.exit('[deploy_accuracy] the test pipeline resizes images to several sizes; the '
                 'detections graph clips to one: use a Resize to a fixed scale')
    net = exportable(model, 'mmdet', 'detections', image_shape=image_shape).eval()
    runners = {'PyTorch': lambda x: [o.numpy() for o in net(torch.from_numpy(x))]}
    runners.update(loaded(deploy(model, args.backend, shape, osp.join(args.out_dir, stem), stem,
                                 toolbox='mmdet', output='detections', repeats=1,
                                 image_shape=image_shape, example=samples[0].inputs)))
    names = list(runners)
    with torch.no_grad():
        times = time_alternately([lambda run=runners[n]: run(samples[0].inputs) for n in names],
                                 args.runs, 2, 'cpu', label=stem)
    threshold = model.roi_head.test_cfg.get('mask_thr_binary', 0.5) if getattr(
        model, 'with_mask', False) else 0.5
    reference = 'mmdet predict (tools/test.py)'
    rows = {reference: detection_accuracy.evaluate(cfg, dataset_meta, samples,
                                                   lambda s: s.mmdet_pred)}
    equal = {}
    with torch.no_grad():
        for name in names:
            predicted = {}

            def predict(sample, run=runners[name], predicted=predicted):
                predicted[id(sample)] = detection_accuracy.instances(
                    run(sample.inputs), sample.data_sample, threshold)
                return predicted[id(sample)]
            rows[name] = detection_accuracy.evaluate(cfg, dataset_meta, samples, predict)
            equal[name] = sum(detection_accuracy.equal_to_mmdet(predicted[id(s)], s)
                              for s in samples)
    metrics = [k for k in rows[reference] if k.endswith('_mAP')]
    print(f'\n{stem}: {len(samples)} validation images at {shape[0]}x{shape[1]} (the image '
          f'{image_shape[0]}x{image_shape[1]}), graph outputs {", ".join(output_names(net))}; '
          '1 thread\n')
    print(f'| runtime | {" | ".join(metrics)} | images equal to mmdet | ms |')
    print('|---|' + '---|' * (len(metrics) + 2))
    print(f'| {reference} | {" | ".join(f"{rows[reference][m]:.3f}" for m in metrics)} | '
          f'{len(samples)} / {len(samples)} | |')
    for name, t in zip(names, times):
        print(f'| {name} | {" | ".join(f"{rows[name][m]:.3f}" for m in metrics)} | '
              f'{equal[name]} / {len(samples)} | {1000 * t[0]:.1f} |')
    return rows


if __name__ == '__main__':
    main()
