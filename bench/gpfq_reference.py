#!/usr/bin/python3
"""The paper's per-neuron GPFQ dynamical system (docs/algorithms/greedy.md, "The dynamical system of one neuron") in NumPy, run on the layer
data QuantLab's greedy plugin dumped (dump_data = true): for every layer and every neuron,
u_0 = 0; for t = 1..N: q_t = Q_A(<X̃_t, u_{t-1} + w_t X_t> / ||X̃_t||²) (with the two special
cases), u_t = u_{t-1} + w_t X_t - q_t X̃_t. Prints the time per layer and the share of codes
that agree with QuantLab's.

usage: gpfq_reference.py layer_data.h5 [--neurons K]   (K > 0: only the first K neurons a layer,
       the time then extrapolated to all of them)
"""
import argparse
import time

import h5py
import numpy as np


def nearest(values, atoms):
    midpoints = (atoms[1:] + atoms[:-1]) / 2
    return np.searchsorted(midpoints, values, side="left")  # ties: the lower atom


def neuron(w, x, x_tilde, atoms, norms2):
    """One neuron: w [N]; x, x_tilde [N, m] (row t = feature t over the samples)."""
    u = np.zeros(x.shape[1])
    codes = np.empty(len(w), dtype=np.int64)
    for t in range(len(w)):
        if norms2[t] < 1e-32:
            codes[t] = nearest(0.0, atoms)  # q_t = 0 (an atom of odd alphabets)
            q = 0.0
        else:
            inner = x_tilde[t] @ u
            if abs(inner) < 1e-10:
                codes[t] = nearest(w[t], atoms)
            else:
                codes[t] = nearest((inner + w[t] * (x_tilde[t] @ x[t])) / norms2[t], atoms)
            q = atoms[codes[t]]
        u += w[t] * x[t] - q * x_tilde[t]
    return codes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--neurons", type=int, default=0)
    args = parser.parse_args()
    total_seconds, agree, compared = 0.0, 0, 0
    with h5py.File(args.file, "r") as h5:
        for name, group in h5.items():
            x_all, xt_all = group["x"][()], group["x_tilde"][()]  # [G, N, m]
            w_all, codes_all, atoms = group["w"][()], group["codes"][()], group["atoms"][()]
            groups, n, f = w_all.shape
            count = f if args.neurons <= 0 else min(f, args.neurons)
            start = time.perf_counter()
            for g in range(groups):
                x, xt = np.ascontiguousarray(x_all[g]), np.ascontiguousarray(xt_all[g])
                norms2 = np.einsum("ij,ij->i", xt, xt)
                for j in range(count):
                    codes = neuron(w_all[g, :, j], x, xt, atoms, norms2)
                    agree += int((codes == codes_all[g, :, j]).sum())
                    compared += n
            seconds = (time.perf_counter() - start) * f / count
            total_seconds += seconds
            print(f"layer {name}: {n} inputs x {f} neurons, {x_all.shape[2]} rows: {seconds:.1f} s"
                  + ("" if count == f else f" (extrapolated from {count} neurons)"))
    print(f"numpy_seconds {total_seconds:.2f}")
    print(f"codes_agree {agree}/{compared} = {100.0 * agree / compared:.4f} %")


if __name__ == "__main__":
    main()
