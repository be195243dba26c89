"""ncnn: the ONNX graph converted by pnnx (its bundled binary, ``fp16=0`` so that the weights
stay fp32: pnnx's default stores fp16) to ``.ncnn.param`` + ``.ncnn.bin``, run by ncnn's Python
binding with fp16 storage and arithmetic off.

Segmentation labels: ncnn's wheel has no ArgMax layer and ncnn has no integer tensors, so its
labels graph takes the argmax by reductions and outputs float32 class ids, cast to int32 here.

ncnn's blobs have no batch axis and at most four dimensions: the graph's input and outputs are
batch 1, and vt-mm's models avoid tensors of rank above 5 (with batch) in the traced graph.
ncnn's ``load_param`` returns -1 for a layer it does not know, after which ``extract`` can
crash: the return value is checked and the unknown layer types are named.
"""
import os
import re
import subprocess

import numpy as np

from .base import Backend, register_backend


def pnnx_binary() -> str:
    import pnnx
    return pnnx.EXEC_PATH


@register_backend('ncnn')
class NCNNBackend(Backend):
    packages = ('ncnn', 'pnnx')
    has_argmax = False  # the ncnn wheel is built without its ArgMax layer
    has_integer_tensors = False  # ncnn's Mat holds floats
    nms_missing = ('ncnn has no NonMaxSuppression layer (only the SSD DetectionOutput and YOLO '
                   'layers, whose decoding and top-k differ from mmdet\'s)')

    def programs(self):
        return [pnnx_binary()]

    def convert(self, job):
        n, c, h, w = job.example.shape
        if n != 1:
            raise ValueError(f'ncnn runs batch 1 (its blobs have no batch axis); got {n}')
        param, weights = job.path('.ncnn.param'), job.path('.ncnn.bin')
        # pnnx writes its intermediate files too; they go beside the ncnn ones. It runs in the
        # output folder, so every path is absolute (a relative --out-dir failed: 'open failed')
        args = [pnnx_binary(), os.path.abspath(job.onnx_path),
                f'inputshape=[1,{c},{h},{w}]f32', 'fp16=0',
                f'ncnnparam={param}', f'ncnnbin={weights}', f'ncnnpy={job.path("_ncnn.py")}',
                f'pnnxparam={job.path(".pnnx.param")}', f'pnnxbin={job.path(".pnnx.bin")}',
                f'pnnxpy={job.path("_pnnx.py")}', f'pnnxonnx={job.path(".pnnx.onnx")}']
        proc = subprocess.run(args, capture_output=True, text=True, cwd=job.out_dir)
        log = proc.stdout + proc.stderr
        unsupported = sorted({line.strip() for line in log.splitlines()
                              if 'not supported' in line or 'unsupported' in line.lower()})
        if proc.returncode != 0 or not os.path.isfile(param) or unsupported:
            raise RuntimeError(f'pnnx could not convert {job.onnx_path} for ncnn (exit '
                               f'{proc.returncode}): ' + ('; '.join(unsupported) or log[-2000:]))
        return [param, weights]

    @classmethod
    def app_settings(cls, precision='fp32'):
        return ('net.opt.use_fp16_storage = net.opt.use_fp16_packed = '
                'net.opt.use_fp16_arithmetic = net.opt.use_bf16_storage = False before '
                "load_param: ncnn's defaults store and compute in fp16 where the CPU has it")

    def load(self, files, job, num_threads=1):
        import ncnn
        net = ncnn.Net()
        net.opt.use_fp16_storage = False
        net.opt.use_fp16_packed = False
        net.opt.use_fp16_arithmetic = False
        net.opt.use_bf16_storage = False
        net.opt.num_threads = num_threads
        if net.load_param(files[0]) != 0:
            with open(files[0]) as f:
                types = sorted({line.split()[0] for line in f.readlines()[2:] if line.strip()})
            raise RuntimeError(f'ncnn {ncnn.__version__} cannot load {files[0]}; its layer types: '
                               f'{", ".join(types)}')
        if net.load_model(files[1]) != 0:
            raise RuntimeError(f'ncnn cannot load the weights {files[1]}')
        with open(files[0]) as f:
            text = f.read()
        inputs = re.findall(r'^Input\s+(\S+)', text, flags=re.M)
        outputs = [f'out{i}' for i in range(len(job.output_names))]

        def run(x: np.ndarray):
            extractor = net.create_extractor()
            extractor.input(inputs[0], ncnn.Mat(np.ascontiguousarray(x[0])).clone())
            results = []
            for name, shape in zip(outputs, job.output_shapes):
                ret, mat = extractor.extract(name)
                if ret != 0:
                    raise RuntimeError(f'ncnn could not compute {name} (error {ret})')
                result = np.array(mat).reshape(shape)
                results.append(np.rint(result).astype(np.int32) if job.integer_outputs else result)
            return results

        return run
