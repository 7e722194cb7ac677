// The mathematics of greedy path-following quantisation (GPFQ, Lybrand & Saab; docs/algorithms/greedy.md
// section 2), independent of networks and plugins so that tests and benchmarks use it directly.
//
// Everything works on G independent groups at once (a dense layer is one group; the
// channel-wise conv scheme has one group per input channel): weights w [G, N, F] hold F neurons
// of N inputs each, data x, x̃ [G, R, N] hold R rows (samples or patches).
//
//   at::Tensor atoms = alphabet(std::log2(3.0), 3.0 * median_abs);   // {-α, 0, α}
//   Grams grams(1, 784);
//   grams.add(x, x_tilde);                                           // batch by batch
//   at::Tensor q = gpfq_from_grams(w, grams, atoms);
#pragma once

#include "quantlab/sdk/nn.hpp"
#include "quantlab/sdk/quantizer.hpp"

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace ql::greedy {

/// round(2^bits) atoms equispaced on [-radius, radius], ascending, float64; `with_zero` adds 0
/// when the count is even (Zhang, Zhou & Saab's "2^b levels plus zero"), so that 2 bits give
/// {-r, -r/3, 0, r/3, r}.
at::Tensor alphabet(double bits, double radius, bool with_zero = false);

/// What an alphabet's radius is a multiple of: the median |w| of the whole layer (Lybrand &
/// Saab) or the mean over the layer's output neurons of their largest |w| (Zhang, Zhou & Saab's
/// ImageNet experiments). A neuron is a row of a dense weight or a whole filter of a
/// convolution, however conv_mode groups the inputs.
enum class RadiusRule { layer_median, mean_neuron_max };

/// The rule's statistic of a weight [out, ...].
double radius_statistic(RadiusRule rule, const at::Tensor& weight);

/// Indices into an `alphabet`'s atoms as integers with one scale, for export: with an odd
/// number K of atoms the integers -(K-1)/2 .. (K-1)/2 times the step (ternary: -1, 0, 1);
/// with an even number the odd integers -(K-1), ..., -1, 1, ..., K-1 times half the step, and
/// 0 for an added zero.
IntegerForm alphabet_integers(const at::Tensor& indices, const at::Tensor& atoms);

/// For each value, the index of the nearest of the ascending `atoms` (ties: the lower atom), on
/// the values' device.
at::Tensor nearest_atom_index(const at::Tensor& values, const at::Tensor& atoms);

/// Each value replaced by its nearest atom (MSQ: memoryless scalar quantisation).
at::Tensor round_to_alphabet(const at::Tensor& values, const at::Tensor& atoms);

/// The Gram matrices the dynamical system needs, summed over the rows seen so far in float64:
/// qx = X̃ᵀX, qq = X̃ᵀX̃ and xx = XᵀX, each [G, N, N], on the device the rows arrive on. Their
/// size never depends on the rows.
struct Grams {
  Grams(std::int64_t groups, std::int64_t features, c10::Device device = c10::kCPU);
  /// Adds rows: x and x_tilde are [G, R, N] (any floating type).
  void add(const at::Tensor& x, const at::Tensor& x_tilde);

  at::Tensor qx, qq, xx;
  std::int64_t rows = 0;
};

/// GPFQ of docs/algorithms/greedy.md 2.2 for every neuron (the columns of w [G, N, F]) from the Gram
/// matrices: <X̃_t, u_{t-1}> = Σ_{j<t} w_j (X̃ᵀX)_{tj} - q_j (X̃ᵀX̃)_{tj}. Returns q [G, N, F]
/// (float64 atoms).
at::Tensor gpfq_from_grams(const at::Tensor& w, const Grams& grams, const at::Tensor& atoms);

/// The same, run on the data with the residual u kept explicitly: the definition itself, for
/// tests (memory and time grow with the rows).
at::Tensor gpfq_on_data(const at::Tensor& w, const at::Tensor& x, const at::Tensor& x_tilde,
                        const at::Tensor& atoms);

/// ||X w - X̃ q|| and ||X w|| (Frobenius, over every group and neuron) from the Gram matrices.
struct Residual {
  double error = 0.0;
  double reference = 0.0;
  double relative() const { return reference > 0 ? error / reference : 0.0; }
};
Residual residual(const at::Tensor& w, const at::Tensor& q, const Grams& grams);

/// How a conv layer's weights become neurons: `channelwise` (the reference scheme: one group
/// per input channel c, whose neurons are the slices W[f, c] of the filters f of c's conv group,
/// over kh*kw inputs) or `full` (one group per conv group, each filter a neuron over its whole
/// receptive field of C_in/groups * kh * kw inputs).
enum class ConvScheme { channelwise, full };

/// A conv layer's input [B, C, H, W] as rows [G, B * positions, N] matching conv_neurons:
/// summing rows x neurons over the groups gives the convolution (without bias). With
/// `max_positions` > 0 only that many output positions per image are kept, drawn with `seed`.
at::Tensor conv_rows(const at::Tensor& input, const nn::Conv2dOptions& options, ConvScheme scheme,
                     std::int64_t max_positions = 0, std::uint64_t seed = 0);
/// A conv weight [out, in/groups, kh, kw] as neurons [G, N, F].
at::Tensor conv_neurons(const at::Tensor& weight, const nn::Conv2dOptions& options, ConvScheme scheme);
/// The inverse of conv_neurons: neurons [G, N, F] back to the weight's layout.
at::Tensor conv_weight(const at::Tensor& neurons, const nn::Conv2dOptions& options, ConvScheme scheme);

}  // namespace ql::greedy
