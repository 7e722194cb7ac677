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
logs = "logs"             # results root: <logs>/<problem>/<topology>/expNNNN/ (relative: to the working directory)

[training]
epochs = 10               # passes over the training split
batch_size = 128          # samples per optimiser step
eval_batch_size = 1000    # samples per batch when evaluating
loss = "cross_entropy"    # cross_entropy
valid_every = 1           # evaluate on the validation split every N epochs (if the problem has one)
checkpoint_every = 1      # write checkpoints/last.pt every N epochs (and always after the last)
drop_last = false         # skip the last, smaller training batch of each epoch

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

[run]
device = "auto"           # auto | cpu | cuda
threads = 0               # intra-op CPU threads; 0: all cores
deterministic = false     # ask LibTorch for deterministic kernels
prefetch = 4              # batches the loader thread prepares ahead (it starts only when batches are costly to make)
)toml";

}  // namespace

std::string_view host_schema() { return kHostSchema; }

}  // namespace ql::core
