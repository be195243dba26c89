"""The command line of tools/model_converters/*: an authors' checkpoint in, vt-mm's out."""
import torch

from .safe_loading import load_checkpoint_file, unwrap_state_dict

__all__ = ['convert_checkpoint_cli']



def convert_checkpoint_cli(argv, description: str, convert, name: str, check=None) -> dict:
    """The command line shared by tools/model_converters/*: ``SRC DST [--ema] [--trust]``.

    Loads SRC safely (``--trust`` for full unpickling), takes its state_dict (``--ema``: the
    EMA weights when present), runs ``check`` on it (the converter's family: raises ValueError
    for anything else), applies ``convert`` (official keys -> vt-mm keys) and saves
    ``{'state_dict': ..., 'meta': {'converted_from': ...}}`` to DST. Any problem ends the
    program with one line ``[name] ERROR: ...`` and no DST written.
    """
    import argparse
    import os.path as osp
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--ema', action='store_true', help='take state_dict_ema when present')
    parser.add_argument('--trust', action='store_true', help='allow full unpickling of SRC')
    args = parser.parse_args(argv)
    if osp.isdir(args.dst):
        raise SystemExit(f'[{name}] ERROR: {args.dst} is a folder; give the output file\'s path '
                         f'(e.g. {osp.join(args.dst, osp.basename(args.src))})')
    try:
        state = unwrap_state_dict(load_checkpoint_file(args.src, args.trust),
                                  prefer_ema=args.ema)
        if check is not None:
            check(state)
    except (RuntimeError, ValueError, TypeError) as e:
        raise SystemExit(f'[{name}] ERROR: {e}') from None
    converted = convert(state)
    torch.save(dict(state_dict=converted, meta=dict(converted_from=osp.basename(args.src))),
               args.dst)
    print(f'[{name}] {len(converted)} tensors -> {args.dst}')
    return converted
