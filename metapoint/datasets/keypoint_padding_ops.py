"""FMMP keypoint padding and the structural-neighbour (BFS) table, as pure numpy functions.

Shapes / conventions shared by every function here:

* ``keypoints``: float array [K_in, 2] with K_in >= ``num_kpts`` (usually K_in == ``k_max``);
* ``visible``: array [K_in] (bool or 0/1 numbers); a slot counts as visible when ``> 0``;
* ``skeleton``: sequence of 0-indexed ``(a, b)`` links of the category (``se_pairs`` officially);
* ``num_kpts``: K_c, the real keypoint count; slots ``K_c..k_max-1`` are the padded part;
* ``keep`` [k_max] bool, ``lam`` [k_max] float, ``edge_ids`` [k_max] int are the per-episode draws,
  indexed by the ABSOLUTE slot id (the draw for padded slot j is ``keep[j]`` / ``lam[j]``), as in
  the official code.

The padding functions return ``(keypoints [k_max, 2], visible [k_max], new_skeleton)``; the output
visibility keeps the dtype of the input ``visible``, and ``new_skeleton`` is a new list of
``[a, b]`` lists: the original links followed by the chain links of the padded points
(docs/methods.md, FMMP keypoint padding; official ``pad_func.py``).

With an empty skeleton, ``eqdiv_padding`` and ``mixup_padding`` fall back to ``zero_padding`` (the
official code crashes there, Q-F12).
"""
from typing import List, Sequence, Tuple

import numpy as np

PaddingResult = Tuple[np.ndarray, np.ndarray, List[List[int]]]


def _pairs(skeleton: Sequence) -> List[List[int]]:
    return [[int(a), int(b)] for a, b in skeleton]


def _check_lengths(k_max: int, num_kpts: int, **arrays) -> None:
    if num_kpts > k_max:
        raise ValueError(f'num_kpts={num_kpts} exceeds k_max={k_max}')
    for name, arr in arrays.items():
        if len(arr) < k_max:
            raise ValueError(f'{name} has {len(arr)} entries; need at least k_max={k_max}')


def _chain_links(a: int, b: int, start: int, new_visible: np.ndarray) -> List[List[int]]:
    """Links a -> (each visible new point in slot order) -> b; nothing when none is visible.

    Because the interpolation weights of the new points are sorted ascending (weight on ``a``),
    the first new point is the one NEAREST ``b``: the chain runs a -> near-b ... near-a -> b.
    This geometric reversal is the official behaviour (Q-F7), kept for checkpoint parity.
    """
    links, prev = [], a
    for i, v in enumerate(new_visible):
        if v:
            links.append([prev, start + i])
            prev = start + i
    if prev != a:
        links.append([prev, b])
    return links


def zero_padding(keypoints, visible, skeleton, num_kpts: int, k_max: int, *args,
                 **kwargs) -> PaddingResult:
    """Zero padding: append (0, 0) points with visibility 0 up to ``k_max`` slots.

    Official behaviour (``get_zero_padding``): the input rows are kept as they are (also those
    beyond ``num_kpts``) and only missing rows up to ``k_max`` are added; the skeleton is
    unchanged. Extra positional / keyword arguments (draws) are accepted and ignored.

    Returns keypoints [k_max, 2], visible [k_max], skeleton (copy).
    """
    kp = np.asarray(keypoints)
    vis = np.asarray(visible)
    if kp.shape[0] > k_max:
        raise ValueError(f'{kp.shape[0]} keypoints exceed k_max={k_max}')
    pad = k_max - kp.shape[0]
    kp = np.concatenate([kp, np.zeros((pad, 2), kp.dtype)])
    vis = np.concatenate([vis, np.zeros(pad, vis.dtype)])
    return kp, vis, _pairs(skeleton)


def eqdiv_padding(keypoints, visible, skeleton, num_kpts: int, k_max: int,
                  keep) -> PaddingResult:
    """Equal-division padding (official ``get_eqdiv_padding``).

    With K_pad = k_max - K_c, n, r = divmod(K_pad, |E|): for every link (a, b) in skeleton order,
    n points ``t * y_a + (1 - t) * y_b`` with t = i / (n + 1), i = 1..n (ascending), visible iff
    ``keep[slot] and v_a and v_b``; then r invisible (0, 0) points. Rows beyond K_c of the input
    are discarded. Chain links per link as in ``_chain_links`` (reversed order, Q-F7, kept).

    Args:
        keypoints: [K_in >= K_c, 2]; visible: [K_in]; skeleton: links (a, b);
        num_kpts: K_c; k_max: output slots; keep: [k_max] bool.
    Returns: keypoints [k_max, 2], visible [k_max], new skeleton.
    """
    if len(skeleton) == 0:
        return zero_padding(keypoints, visible, skeleton, num_kpts, k_max)
    _check_lengths(k_max, num_kpts, keep=keep)
    kp = np.asarray(keypoints)[:num_kpts]
    vis = np.asarray(visible)[:num_kpts]
    keep = np.asarray(keep).astype(bool)
    vis_b = vis > 0
    pairs = _pairs(skeleton)
    n, r = divmod(k_max - num_kpts, len(pairs))
    pts, viss, links = [kp], [vis], list(pairs)
    if n:
        t = np.linspace(0, 1, n + 2, dtype=np.float32)[1:-1, None].astype(kp.dtype)
        start = num_kpts
        for a, b in pairs:
            new_vis = keep[start:start + n] & vis_b[a] & vis_b[b]
            pts.append(t * kp[a][None] + (1 - t) * kp[b][None])
            viss.append(new_vis.astype(vis.dtype))
            links += _chain_links(a, b, start, new_vis)
            start += n
    pts.append(np.zeros((r, 2), kp.dtype))
    viss.append(np.zeros(r, vis.dtype))
    return np.concatenate(pts), np.concatenate(viss), links


def mixup_padding(keypoints, visible, skeleton, num_kpts: int, k_max: int, lam, keep,
                  edge_ids) -> PaddingResult:
    """Mix-up padding (official ``get_mixup_padding``).

    The first K_pad = k_max - K_c edge ids choose links; for each distinct id in ascending order
    with count m, the next m slots (contiguously from K_c) get ``lam * y_a + (1 - lam) * y_b``
    with the slots' own ``lam`` values SORTED ascending, visible iff ``keep[slot] and v_a and
    v_b``. Rows beyond K_c of the input are discarded. Chain links as in ``_chain_links``
    (reversed order, Q-F7, kept). ``lam`` is cast to the keypoint dtype before use (official).

    Args:
        keypoints: [K_in >= K_c, 2]; visible: [K_in]; skeleton: links (a, b); num_kpts: K_c;
        k_max: output slots; lam: [k_max] float; keep: [k_max] bool;
        edge_ids: [k_max] int in [0, |E|).
    Returns: keypoints [k_max, 2], visible [k_max], new skeleton.
    """
    if len(skeleton) == 0:
        return zero_padding(keypoints, visible, skeleton, num_kpts, k_max)
    _check_lengths(k_max, num_kpts, lam=lam, keep=keep, edge_ids=edge_ids)
    kp = np.asarray(keypoints)[:num_kpts]
    vis = np.asarray(visible)[:num_kpts]
    keep = np.asarray(keep).astype(bool)
    lam = np.asarray(lam).astype(kp.dtype)
    vis_b = vis > 0
    pairs = _pairs(skeleton)
    selected = np.asarray(edge_ids)[:k_max - num_kpts].astype(np.int64)
    pts, viss, links = [kp], [vis], list(pairs)
    start = num_kpts
    for sid in np.unique(selected):
        m = int((selected == sid).sum())
        a, b = pairs[int(sid)]
        new_vis = keep[start:start + m] & vis_b[a] & vis_b[b]
        w = np.sort(lam[start:start + m])[:, None]
        pts.append(w * kp[a][None] + (1 - w) * kp[b][None])
        viss.append(new_vis.astype(vis.dtype))
        links += _chain_links(a, b, start, new_vis)
        start += m
    return np.concatenate(pts), np.concatenate(viss), links


def structural_neighbours(skeleton, visible, num: int = 16) -> Tuple[np.ndarray, np.ndarray]:
    """Breadth-first structural neighbour table (official ``get_side_ref_idx_and_orders``, method 3).

    Adjacency: for every VISIBLE node p, its neighbours in skeleton (edge-list) order, taking
    ``a`` from links (a, p) and ``b`` from links (p, b). For a visible node k the row is k itself
    (depth 0), then unvisited neighbours in BFS order with their depth, cut to ``num`` and padded
    with k (depth 0). Invisible nodes get ``num`` copies of themselves (depth 0).

    Official behaviour kept for checkpoint parity (Q-F8): invisible nodes are never expanded but
    DO appear as neighbours of visible nodes (and so may be referenced by visible nodes' rows).

    Args:
        skeleton: links (a, b), 0-indexed; visible: [K] (visible when > 0); num: row length.
    Returns:
        idx int64 [K, num], depth int64 [K, num].
    """
    vis = np.asarray(visible) > 0
    k_total = len(vis)
    pairs = _pairs(skeleton)
    table = {}
    for p in range(k_total):
        nbrs = []
        if vis[p]:
            for a, b in pairs:
                if b == p:
                    nbrs.append(a)
                if a == p:
                    nbrs.append(b)
        table[p] = nbrs
    idx = np.empty((k_total, num), np.int64)
    depth = np.zeros((k_total, num), np.int64)
    for k in range(k_total):
        row, lev = [k], [0]
        if vis[k]:
            visited, queue, head = {k}, [(k, 0)], 0
            while head < len(queue) and len(row) < num:
                node, level = queue[head]
                head += 1
                for nb in table.get(node, []):
                    if nb not in visited:
                        visited.add(nb)
                        queue.append((nb, level + 1))
                        row.append(nb)
                        lev.append(level + 1)
        row, lev = row[:num], lev[:num]
        idx[k] = row + [k] * (num - len(row))
        depth[k] = lev + [0] * (num - len(lev))
    return idx, depth
