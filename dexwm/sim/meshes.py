"""Mesh decimation for CPU rendering: render cost is set by triangle count (DESIGN.md s.6).

`decimate_meshes(spec, max_faces)` replaces every mesh of an MjSpec that has more than `max_faces`
triangles by a vertex-clustered copy (vertices snapped to a grid, merged, degenerate triangles
dropped), given to MuJoCo as user vertices and faces in the mesh file's own frame, so geoms that
use it keep their placement. Coarse enough for 128-224 px frames; shapes and silhouettes stay.
"""

from __future__ import annotations

import mujoco
import numpy as np

GRID_SIZES = (96, 64, 48, 32, 24, 16, 12)  # cells along the longest side, finest first


def cluster_vertices(verts: np.ndarray, faces: np.ndarray, cells: int):
    """Vertex clustering on a grid with `cells` cells along the longest bounding-box side.
    verts (V, 3), faces (F, 3) -> (V', 3), (F', 3)."""
    lo = verts.min(axis=0)
    size = (verts.max(axis=0) - lo).max() / cells
    keys = np.floor((verts - lo) / size).astype(np.int64)  # (V, 3) cell of each vertex
    _, cluster = np.unique(keys, axis=0, return_inverse=True)
    cluster = cluster.reshape(-1)
    n = cluster.max() + 1
    merged = np.zeros((n, 3))
    np.add.at(merged, cluster, verts)
    merged /= np.bincount(cluster, minlength=n)[:, None]
    tri = cluster[faces]  # (F, 3)
    keep = (tri[:, 0] != tri[:, 1]) & (tri[:, 1] != tri[:, 2]) & (tri[:, 0] != tri[:, 2])
    tri = tri[keep]
    _, first = np.unique(np.sort(tri, axis=1), axis=0, return_index=True)  # drop duplicates
    tri = tri[np.sort(first)]
    used, tri = np.unique(tri, return_inverse=True)  # drop unreferenced vertices
    return merged[used], tri.reshape(-1, 3)


def decimate_meshes(spec: mujoco.MjSpec, max_faces: int = 1200) -> dict[str, tuple[int, int]]:
    """Decimate, in place, the meshes of `spec` with more than `max_faces` triangles. Returns
    {mesh name: (faces before, faces after)}."""
    model = spec.copy().compile()  # read the meshes as MuJoCo loads them (on a copy: a
    # compiled spec keeps the file's normals, which would not match the new faces)
    report = {}
    for mesh in spec.meshes:
        i = model.mesh(mesh.name).id
        nf = int(model.mesh_facenum[i])
        if nf <= max_faces:
            continue
        va, nv, fa = model.mesh_vertadr[i], model.mesh_vertnum[i], model.mesh_faceadr[i]
        verts = model.mesh_vert[va : va + nv].astype(float)
        faces = model.mesh_face[fa : fa + nf].astype(np.int64)
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, model.mesh_quat[i])
        verts = verts @ rot.reshape(3, 3).T + model.mesh_pos[i]  # back to the file's frame
        for cells in GRID_SIZES:
            new_v, new_f = cluster_vertices(verts, faces, cells)
            if len(new_f) <= max_faces:
                break
        mesh.file = ""
        mesh.usernormal, mesh.userfacenormal = [], []  # recomputed by MuJoCo
        mesh.usertexcoord, mesh.userfacetexcoord = [], []
        mesh.scale = [1.0, 1.0, 1.0]  # vertices are already scaled
        mesh.uservert = new_v.astype(np.float32).reshape(-1).tolist()
        mesh.userface = new_f.astype(np.int32).reshape(-1).tolist()
        report[mesh.name] = (nf, len(new_f))
    return report
