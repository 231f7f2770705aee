"""The one rule for whether an image file is usable, shared by the dataset and the data checker."""
import os
import stat
from typing import Optional

import cv2
import numpy as np


def image_problem(path: str, decode: bool = False) -> Optional[str]:
    """What is wrong with an image file, or None when it is usable.

    Returns ``'missing'`` (no regular file), ``'empty'`` (0 bytes), and with ``decode`` also
    ``'unreadable'`` (cannot be opened) or ``'undecodable'`` (OpenCV cannot decode it). Without
    ``decode`` this is one ``os.stat``.
    """
    try:
        st = os.stat(path)
    except OSError:
        return 'missing'
    if not stat.S_ISREG(st.st_mode):
        return 'missing'
    if st.st_size == 0:
        return 'empty'
    if decode:
        try:
            buf = np.fromfile(path, dtype=np.uint8)
        except OSError:
            return 'unreadable'
        if cv2.imdecode(buf, cv2.IMREAD_COLOR) is None:
            return 'undecodable'
    return None
