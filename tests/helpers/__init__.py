"""What several test modules share: the repository's root, generated detection batches
(:mod:`.det`), small export configs (:mod:`.export`), the converters' one-to-one check
(:mod:`.converters`) and the torch.compile checks' configs (:mod:`.compile_configs`)."""
import os.path as osp

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
