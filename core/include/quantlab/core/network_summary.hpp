// A table of a network for `qlhost summary`: every leaf module with its type, parameter count
// and whether it is quantisable, the output shape of every quantisable layer for one sample of
// the spec, and the totals. Needs no data: the input is synthetic.
//
//   std::string table = summarize_network(*network, spec);
#pragma once

#include "quantlab/sdk/problem.hpp"
#include "quantlab/sdk/topology.hpp"

#include <string>

namespace ql::core {

std::string summarize_network(Network& network, const DatasetSpec& spec);

}  // namespace ql::core
