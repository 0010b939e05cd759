// weft/comm/comm.hpp - the comm family's transport-free part: the communicator concept and its
// statistics, the thread-backed local world, weft's own collectives and the simulated link.
// The transports are separate headers, included explicitly: weft/comm/mpi.hpp (weft::mpi) and
// weft/comm/nccl.hpp (weft::nccl).
#pragma once

#include "weft/comm/collectives.hpp"
#include "weft/comm/communicator.hpp"
#include "weft/comm/local.hpp"
#include "weft/comm/simulated_link.hpp"
