// Catch2 main for the MPI tests: MPI_Init around the session. Run under mpiexec; every rank
// runs every test case in declaration order (the cases are collective).
#include <mpi.h>

#include <catch2/catch_session.hpp>

#include <string>
#include <vector>

int main(int argc, char* argv[]) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  std::vector<char*> args(argv, argv + argc);
  std::string order = "--order", decl = "decl";
  args.push_back(order.data());
  args.push_back(decl.data());
  const int rc = Catch::Session().run(static_cast<int>(args.size()), args.data());
  // Every rank's verdict: the run fails when any rank failed.
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}
