#!/usr/bin/env python3
"""Write the small .npy files tests/test_npy.c reads, with numpy itself.

Run with /usr/bin/python3 (Debian's python3-numpy) from anywhere:
    /usr/bin/python3 tests/data/npy/make_npy.py
Values are arange-based so the C test can recompute them.
"""
import os
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))


def save(name, a, version=None):
    path = os.path.join(here, name)
    if version is None:
        np.save(path, a)
    else:
        with open(path, "wb") as f:
            np.lib.format.write_array(f, a, version=version)


save("f32_2x3.npy", np.arange(6, dtype="<f4").reshape(2, 3) * 0.5)
save("f64_scalar.npy", np.array(3.25, dtype="<f8"))
save("f16_vec.npy", np.array([1.0, -2.5, 0.0, 65504.0], dtype="<f2"))
save("i64_vec.npy", np.arange(-2, 3, dtype="<i8"))
save("i32_2x2x2.npy", np.arange(8, dtype="<i4").reshape(2, 2, 2) - 4)
save("i16_vec.npy", np.array([-32768, 0, 32767], dtype="<i2"))
save("i8_vec.npy", np.array([-128, -1, 0, 127], dtype="i1"))
save("u8_3x4.npy", np.arange(12, dtype="u1").reshape(3, 4) * 20)
save("u16_vec.npy", np.array([0, 1, 65535], dtype="<u2"))
save("bool_vec.npy", np.array([True, False, True], dtype="?"))
save("f32_empty_0x3.npy", np.zeros((0, 3), dtype="<f4"))
save("f32_v2.npy", np.arange(4, dtype="<f4"), version=(2, 0))
save("f32_v3.npy", np.arange(4, dtype="<f4"), version=(3, 0))
save("f32_fortran.npy", np.asfortranarray(np.arange(6, dtype="<f4").reshape(2, 3)))
save("f32_bigendian.npy", np.arange(3, dtype=">f4"))
