// An outside project's MPI program: find_package(weft COMPONENTS mpi), weft::mpi.
#include <weft/comm/mpi.hpp>
#include <weft/weft.hpp>

#include <cstdio>
#include <vector>

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int bad = 0;
  {
    weft::mpi_communicator comm(MPI_COMM_WORLD, {.timeout = std::chrono::seconds(10)});
    std::vector<double> x(10, 1.0);
    weft::all_reduce(comm, std::span(x));
    bad = x[9] != comm.size();
    std::printf("consumer_mpi: %d rank(s), all_reduce %s\n", comm.size(), bad ? "WRONG" : "ok");
  }
  MPI_Finalize();
  return bad;
}
