"""Write the synthetic LIP-layout demo dataset (see vt_mm/datasets/demo_lip.py).

    python tools/dataset_converters/make_demo_lip.py --out data/LIP_demo [--train 400 --val 50
                                                     --size 128 --seed 0 --overwrite]
"""
import argparse

from vt_mm.datasets.demo_lip import make_demo_lip


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument('--out', default='data/LIP_demo', help='dataset root to write')
    parser.add_argument('--train', type=int, default=400, help='training images')
    parser.add_argument('--val', type=int, default=50, help='validation images')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true', help='rewrite existing demo data')
    args = parser.parse_args(argv)
    counts = make_demo_lip(args.out, args.train, args.val, args.size, args.seed, args.overwrite)
    print(f'[make_demo_lip] {args.out}: {counts["train"]} train / {counts["val"]} val images '
          f'({args.size}x{args.size}, seed {args.seed})')


if __name__ == '__main__':
    main()
