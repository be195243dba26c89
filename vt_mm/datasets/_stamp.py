"""The completion stamp of generated datasets: data written with the same arguments is reused."""
import os.path as osp


def is_current(root: str, name: str, signature: str, overwrite: bool = False) -> bool:
    """Whether ``root`` holds complete data generated with ``signature`` (and no overwrite)."""
    stamp = osp.join(root, name)
    if overwrite or not osp.isfile(stamp):
        return False
    with open(stamp) as f:
        return f.read().strip() == signature


def write_stamp(root: str, name: str, signature: str) -> None:
    """Marks ``root`` complete for ``signature``; written last, after every file."""
    with open(osp.join(root, name), 'w') as f:
        f.write(signature + '\n')
