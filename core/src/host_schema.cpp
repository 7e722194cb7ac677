// The host's sections of an experiment file: every key, its default and what it means.
// `qlhost plugins --show host` prints this text.
#include "quantlab/core/experiment_config.hpp"

namespace ql::core {

namespace {

constexpr char kHostSchema[] = R"toml(
[experiment]
name = ""                 # label for listings; empty: the experiment file's name
description = ""          # free text kept with the results
seed = 42                 # seeds initialisation, shuffling, hold-out splits and plugin RNGs

[storage]
data = ""                 # data root: relative data paths of [problem] start here; "": $QL_DATA, the per-user file, else the working directory
logs = ""                 # results root: <logs>/<problem>/<topology>/expNNNN/; "": $QL_LOGS, the per-user file, else ./logs
                          # (relative paths here are relative to the experiment file; per-user file: ~/.config/quantlab/storage.toml)

[training]
epochs = 10               # passes over the training split
batch_size = 128          # samples per optimiser step
eval_batch_size = 1000    # samples per batch when evaluating
loss = "auto"             # auto: cross_entropy for classification problems, mean_squared_error for regression | cross_entropy | hinge | squared_hinge (targets +1 / -1, mean over classes of max(0, 1 - t*y), squared: the ANA MNIST reference) | mean_squared_error
valid_fraction = 0.1      # share of the training split held out for validation when the problem has no validation split of its own (0: none)
hold_out_seed = 1234      # seed of that hold-out, fixed so that every run validates on the same samples
valid_every = 1           # evaluate on the validation split every N epochs
checkpoint_every = 1      # write checkpoints/last.pt every N epochs (and always after the last)
checkpoint_every_steps = 0  # also write checkpoints/last.pt every N optimiser steps within an epoch (0: never)
best_metric = "auto"      # checkpoints/best.pt keeps the epoch with the highest valid/top1 or the lowest valid/loss; auto: valid/top1 for classification, valid/loss for regression
folds = 1                 # K > 1: K-fold cross-validation on the training split (fold k validates on samples k, k+K, ... of a seeded permutation)
drop_last = false         # skip the last, smaller training batch of each epoch
simulated_workers = 1     # M > 1: each step averages M minibatch gradients, each through the algorithm's gradient codec if any (the papers' simulated data-parallel SGD)

[training.optimizer]
name = "adam"             # sgd | adam | adamw
lr = 0.001                # initial learning rate
momentum = 0.0            # sgd: momentum factor
nesterov = false          # sgd: Nesterov momentum (needs momentum > 0)
weight_decay = 0.0        # L2 penalty (sgd, adam) or decoupled decay (adamw)
betas = [0.9, 0.999]      # adam, adamw: running-average coefficients
eps = 1e-8                # adam, adamw: denominator term

[training.lr_schedule]
name = "constant"         # constant | step | multistep | cosine (set once per epoch)
step_size = 10            # step: multiply by gamma every step_size epochs
gamma = 0.1               # step, multistep: decay factor
milestones = [30, 60]     # multistep: epochs at which the rate is multiplied by gamma
min_lr = 0.0              # cosine: rate reached after the last epoch

[metrics]
step_scalars = true       # also record the loss of every optimiser step (train/loss_step)
histogram_every = 1       # weight histograms of the quantisable layers every N epochs (0: never)

[run]
device = "auto"           # auto (the first GPU if LibTorch sees one, else the CPU) | cpu | cuda (= cuda:0) | cuda:N
threads = 0               # intra-op CPU threads; 0: all cores
precision = "fp32"        # fp32 | bf16: autocast to bfloat16 for forward passes (on CUDA, or the CPU's autocast)
deterministic = false     # deterministic kernels (on CUDA also cuDNN's and cuBLAS's; otherwise cuDNN picks the fastest)
prefetch = 4              # batches the loader thread prepares ahead (it starts only when batches are costly to make)

[export]
format = "none"           # none | onnx: each fold's kept result as fold<k>/result.onnx, quantised weights as integer codes (docs/export.md) | h5: as fold<k>/quantized.h5, a complete network in HDF5 | onnx+h5: both
opset = 13                # 13: codes in int8/uint8 containers | 21: int4/uint4 where the codes fit
fold_batch_norm = false   # fold each batch norm into the convolution or linear layer before it (integer codes keep their values; their per-channel scales absorb it)
)toml";

}  // namespace

std::string_view host_schema() { return kHostSchema; }

}  // namespace ql::core
