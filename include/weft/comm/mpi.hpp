// weft/comm/mpi.hpp - the MPI communicator (include explicitly; link weft::mpi).
//
//   MPI_Init(&argc, &argv);
//   {
//     weft::mpi_communicator comm(MPI_COMM_WORLD, {.timeout = std::chrono::seconds(10)});
//     weft::all_reduce(comm, std::span(grad));            // weft's own ring / halving
//     comm.all_reduce(std::span(grad));                   // MPI_Iallreduce, waited with the time-out
//   }                                                     // destroy before MPI_Finalize
//   MPI_Finalize();
//
// Wraps any MPI_Comm (Open MPI 4.1 and MPICH 4.0 are tested). The constructor duplicates it
// twice (collective over its ranks): one communicator for data, one for abort notices, so
// weft's traffic never matches the caller's. Every operation is non-blocking underneath and
// every wait polls MPI_Test against the time-out, checking between polls for an abort notice
// from any peer; past the time-out the request is cancelled and weft::comm_error names the
// rank, the peer, the operation and the bytes. abort() sends each peer a notice, so a rank
// whose code throws makes the others fail at once rather than at their time-out.
//
// Persistent requests for repeated ring steps: send_init / recv_init make them once
// (MPI_Send_init / MPI_Recv_init), start() starts one and returns a request to wait on.
//
// Messages are limited to INT_MAX bytes (MPI's int counts); larger ones throw
// invalid_argument (weft's collectives and overlap helpers send pieces well below it).
#pragma once

#include <mpi.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/comm/collectives.hpp"
#include "weft/comm/communicator.hpp"

namespace weft {

namespace detail::comm {

template <class T>
MPI_Datatype mpi_type() {
  if constexpr (std::is_same_v<T, float>)
    return MPI_FLOAT;
  else if constexpr (std::is_same_v<T, double>)
    return MPI_DOUBLE;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return MPI_INT32_T;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return MPI_INT64_T;
  else if constexpr (std::is_same_v<T, std::uint32_t>)
    return MPI_UINT32_T;
  else if constexpr (std::is_same_v<T, std::uint64_t>)
    return MPI_UINT64_T;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return MPI_UINT8_T;
  else
    static_assert(sizeof(T) == 0, "weft::mpi_communicator reduces float, double and 32/64-bit integers");
}

inline MPI_Op mpi_op(reduce_op op) {
  switch (op) {
    case reduce_op::sum:
      return MPI_SUM;
    case reduce_op::max:
      return MPI_MAX;
    case reduce_op::min:
      return MPI_MIN;
  }
  return MPI_SUM;
}

inline std::string mpi_error_string(int code) {
  char buf[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, buf, &len);
  return std::string(buf, static_cast<std::size_t>(len));
}

inline constexpr int tag_abort = 1;

}  // namespace detail::comm

class mpi_communicator {
 public:
  static constexpr bool host_memory = true;
  /// MPI counts are ints: weft's collectives check their largest message against this.
  static constexpr std::int64_t max_message_bytes = INT_MAX;

  /// A pending operation; a default-constructed request is complete.
  struct request {
    MPI_Request req = MPI_REQUEST_NULL;
    bool persistent = false;
    comm_kind op = comm_kind::send;
    int peer = -1;
    std::int64_t bytes = 0;
    detail::comm::clock::time_point start{};
  };

  /// A persistent send or receive (send_init / recv_init), started by start().
  class persistent {
   public:
    persistent() = default;
    persistent(const persistent&) = delete;
    persistent& operator=(const persistent&) = delete;
    persistent(persistent&& o) noexcept { *this = std::move(o); }
    persistent& operator=(persistent&& o) noexcept {
      std::swap(req_, o.req_);
      op_ = o.op_;
      peer_ = o.peer_;
      bytes_ = o.bytes_;
      return *this;
    }
    ~persistent() {
      int finalized = 0;
      MPI_Finalized(&finalized);
      if (req_ != MPI_REQUEST_NULL && !finalized) MPI_Request_free(&req_);
    }

   private:
    friend class mpi_communicator;
    MPI_Request req_ = MPI_REQUEST_NULL;
    comm_kind op_ = comm_kind::send;
    int peer_ = -1;
    std::int64_t bytes_ = 0;
  };

  explicit mpi_communicator(MPI_Comm comm, comm_options opts = {})
      : opts_(opts), stats_(opts.stats_capacity) {
    call(MPI_Comm_dup(comm, &data_), "MPI_Comm_dup", -1);
    call(MPI_Comm_dup(comm, &control_), "MPI_Comm_dup", -1);
    // Errors come back as codes (and become comm_error), never abort the job.
    MPI_Comm_set_errhandler(data_, MPI_ERRORS_RETURN);
    MPI_Comm_set_errhandler(control_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(data_, &rank_);
    MPI_Comm_size(data_, &size_);
  }
  mpi_communicator(const mpi_communicator&) = delete;
  mpi_communicator& operator=(const mpi_communicator&) = delete;
  ~mpi_communicator() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    // A failed communicator is not freed: messages may still be on their way to it (a stalled
    // peer's late sends), and MPI may give a freed context to the next communicator made, which
    // would then receive them (MPICH does). Its two duplicates stay allocated until MPI_Finalize.
    if (failed_) return;
    if (data_ != MPI_COMM_NULL) MPI_Comm_free(&data_);
    if (control_ != MPI_COMM_NULL) MPI_Comm_free(&control_);
  }

  int rank() const { return rank_; }
  int size() const { return size_; }
  const comm_options& options() const { return opts_; }
  const comm_stats& stats() const { return stats_; }
  comm_stats& stats() { return stats_; }
  /// Scratch for weft's collectives and overlap helpers (reused; see detail::comm::scratch_pool).
  std::byte* scratch(std::size_t bytes) { return scratch_.get(bytes); }
  static constexpr const char* name() { return "mpi"; }
  /// The duplicated communicator weft's data travels on.
  MPI_Comm native() const { return data_; }

  template <class T>
  request isend(std::span<const T> data, int peer, int tag = 0) {
    const int n = count_of("isend", data.size_bytes(), peer);
    request r{
        MPI_REQUEST_NULL,          false, comm_kind::send, peer, static_cast<std::int64_t>(data.size_bytes()),
        detail::comm::clock::now()};
    call(MPI_Isend(data.data(), n, MPI_BYTE, peer, tag, data_, &r.req), "MPI_Isend", peer);
    return r;
  }
  template <class T>
  request isend(std::span<T> data, int peer, int tag = 0) {
    return isend(std::span<const T>(data), peer, tag);
  }
  template <class T>
  request irecv(std::span<T> data, int peer, int tag = 0) {
    const int n = count_of("irecv", data.size_bytes(), peer);
    request r{
        MPI_REQUEST_NULL,          false, comm_kind::recv, peer, static_cast<std::int64_t>(data.size_bytes()),
        detail::comm::clock::now()};
    call(MPI_Irecv(data.data(), n, MPI_BYTE, peer, tag, data_, &r.req), "MPI_Irecv", peer);
    receives_.push_back(r.req);
    return r;
  }

  template <class T>
  persistent send_init(std::span<const T> data, int peer, int tag = 0) {
    persistent p;
    const int n = count_of("send_init", data.size_bytes(), peer);
    call(MPI_Send_init(data.data(), n, MPI_BYTE, peer, tag, data_, &p.req_), "MPI_Send_init", peer);
    p.op_ = comm_kind::send;
    p.peer_ = peer;
    p.bytes_ = static_cast<std::int64_t>(data.size_bytes());
    return p;
  }
  template <class T>
  persistent recv_init(std::span<T> data, int peer, int tag = 0) {
    persistent p;
    const int n = count_of("recv_init", data.size_bytes(), peer);
    call(MPI_Recv_init(data.data(), n, MPI_BYTE, peer, tag, data_, &p.req_), "MPI_Recv_init", peer);
    p.op_ = comm_kind::recv;
    p.peer_ = peer;
    p.bytes_ = static_cast<std::int64_t>(data.size_bytes());
    return p;
  }
  /// Starts a persistent operation; wait on the returned request (the persistent one is reusable
  /// once that request has completed).
  request start(persistent& p) {
    usable(comm_kind_name(p.op_), p.peer_);
    call(MPI_Start(&p.req_), "MPI_Start", p.peer_);
    if (p.op_ == comm_kind::recv) receives_.push_back(p.req_);
    return request{p.req_, true, p.op_, p.peer_, p.bytes_, detail::comm::clock::now()};
  }

  bool test(request& r) {
    if (r.req == MPI_REQUEST_NULL) return true;
    usable(comm_kind_name(r.op), r.peer);
    check_abort(r);
    return poll(r);
  }

  void wait(request& r) {
    if (r.req == MPI_REQUEST_NULL) return;
    usable(comm_kind_name(r.op), r.peer);
    const auto deadline = detail::comm::clock::now() + opts_.timeout;
    const bool ok = detail::comm::poll_until(
        deadline, [&] { return poll(r); }, [&] { check_abort(r); });
    if (!ok) {
      fail(r);
      throw comm_error(rank_, r.peer, comm_kind_name(r.op),
                       detail::comm::timeout_message(r.bytes, opts_.timeout));
    }
  }

  /// Tells every other rank to fail: their pending and later waits throw comm_error naming
  /// this rank and `reason`. This communicator is failed afterwards.
  void abort(const std::string& reason) {
    fail_all();
    if (aborted_) return;
    aborted_ = true;
    abort_text_ = reason.substr(0, 200);
    for (int p = 0; p < size_; ++p) {
      if (p == rank_) continue;
      MPI_Request q;
      if (MPI_Isend(abort_text_.data(), static_cast<int>(abort_text_.size()), MPI_CHAR, p,
                    detail::comm::tag_abort, control_, &q) == MPI_SUCCESS) {
        MPI_Request_free(&q);
      }
    }
  }

  // The transport's own collectives (non-blocking MPI calls, waited with the time-out).
  template <class T>
  void all_reduce(std::span<T> data, reduce_op op = reduce_op::sum) {
    collective(comm_kind::all_reduce, data.size_bytes(), [&](MPI_Request* q) {
      return MPI_Iallreduce(MPI_IN_PLACE, data.data(), count_of("all_reduce", data.size(), -1),
                            detail::comm::mpi_type<T>(), detail::comm::mpi_op(op), data_, q);
    });
  }
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    detail::require(recv.size() == send.size() * static_cast<std::size_t>(size_),
                    "mpi_communicator::all_gather", "recv",
                    detail::concat(size_, " x ", send.size(), " elements"), recv.size());
    collective(comm_kind::all_gather, recv.size_bytes(), [&](MPI_Request* q) {
      const int n = count_of("all_gather", send.size_bytes(), -1);
      return MPI_Iallgather(send.data(), n, MPI_BYTE, recv.data(), n, MPI_BYTE, data_, q);
    });
  }
  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, reduce_op op = reduce_op::sum) {
    detail::require(send.size() == recv.size() * static_cast<std::size_t>(size_),
                    "mpi_communicator::reduce_scatter", "send",
                    detail::concat(size_, " x ", recv.size(), " elements"), send.size());
    collective(comm_kind::reduce_scatter, send.size_bytes(), [&](MPI_Request* q) {
      return MPI_Ireduce_scatter_block(send.data(), recv.data(), count_of("reduce_scatter", recv.size(), -1),
                                       detail::comm::mpi_type<T>(), detail::comm::mpi_op(op), data_, q);
    });
  }
  template <class T>
  void all_to_all(std::span<const T> send, std::span<T> recv) {
    detail::require(send.size() % static_cast<std::size_t>(size_) == 0 && recv.size() == send.size(),
                    "mpi_communicator::all_to_all", "send, recv",
                    detail::concat("equal sizes, a multiple of ", size_),
                    detail::concat(send.size(), ", ", recv.size()));
    collective(comm_kind::all_to_all, send.size_bytes(), [&](MPI_Request* q) {
      const int n = count_of("all_to_all", send.size_bytes() / static_cast<std::size_t>(size_), -1);
      return MPI_Ialltoall(send.data(), n, MPI_BYTE, recv.data(), n, MPI_BYTE, data_, q);
    });
  }
  void barrier() {
    collective(comm_kind::barrier, 0, [&](MPI_Request* q) { return MPI_Ibarrier(data_, q); });
  }

 private:
  template <class Start>
  void collective(comm_kind op, std::size_t bytes, Start&& start) {
    usable(comm_kind_name(op), -1);
    request r{MPI_REQUEST_NULL, false, op, -1, static_cast<std::int64_t>(bytes), detail::comm::clock::now()};
    call(start(&r.req), comm_kind_name(op), -1);
    wait(r);
  }

  int count_of(const char* op, std::size_t n, int peer) {
    detail::require(n <= static_cast<std::size_t>(INT_MAX), op, "data",
                    "at most INT_MAX elements per message", n);
    if (peer >= 0) {
      detail::require(peer < size_, op, "peer", detail::concat("a rank in [0, ", size_, ")"), peer);
    }
    usable(op, peer);
    return static_cast<int>(n);
  }

  void usable(const char* op, int peer) {
    if (failed_) throw comm_error(rank_, peer, op, "the communicator failed earlier; make a new one");
  }

  void call(int code, const char* what, int peer) {
    if (code != MPI_SUCCESS) {
      fail_all();
      throw comm_error(rank_, peer, what, detail::comm::mpi_error_string(code));
    }
  }

  /// One MPI_Test; on completion: the record, and for a receive the size check (a shorter
  /// message than the receive is an error too; a longer one is MPI's truncation error).
  bool poll(request& r) {
    const MPI_Request handle = r.req;
    int flag = 0;
    MPI_Status st;
    const int code = MPI_Test(&r.req, &flag, &st);
    if (code != MPI_SUCCESS) {
      forget(handle);
      r.req = MPI_REQUEST_NULL;
      call(code, "MPI_Test", r.peer);
    }
    if (!flag) return false;
    if (r.op == comm_kind::recv) {
      forget(handle);
      int got = 0;
      MPI_Get_count(&st, MPI_BYTE, &got);
      if (got != r.bytes) {
        r.req = MPI_REQUEST_NULL;
        fail_all();
        throw comm_error(rank_, r.peer, "recv",
                         detail::concat("message of ", got, " bytes for a receive of ", r.bytes, " bytes"));
      }
    }
    stats_.add({r.op, r.peer, r.bytes, detail::comm::seconds_since(r.start)});
    if (r.persistent) r.req = MPI_REQUEST_NULL;  // the persistent handle lives on in its owner
    return true;
  }

  void forget(MPI_Request handle) {
    const auto it = std::find(receives_.begin(), receives_.end(), handle);
    if (it != receives_.end()) receives_.erase(it);
  }

  /// Fails the communicator after an error on request r (sends and collectives are left behind:
  /// MPI cannot cancel a collective, and a send only reads its buffer).
  void fail(request& r) {
    if (r.op == comm_kind::recv) r.req = MPI_REQUEST_NULL;  // withdrawn by fail_all below
    fail_all();
  }

  /// Marks the communicator failed and withdraws every receive still posted, so that no late
  /// message is written into a buffer that the error is about to unwind: each is cancelled and
  /// completed (a receive that had already matched finishes; waited for at most 1 s).
  void fail_all() {
    failed_ = true;
    for (MPI_Request h : receives_) {
      MPI_Cancel(&h);
      int done = 0;
      const auto until = detail::comm::clock::now() + std::chrono::seconds(1);
      while (!done && detail::comm::clock::now() < until) {
        if (MPI_Test(&h, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) break;
      }
    }
    receives_.clear();
  }

  /// An abort notice from any peer fails the pending request and this communicator.
  void check_abort(request& r) {
    int flag = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, detail::comm::tag_abort, control_, &flag, &st);
    if (!flag) return;
    int len = 0;
    MPI_Get_count(&st, MPI_CHAR, &len);
    std::string why(static_cast<std::size_t>(len), '\0');
    MPI_Recv(why.data(), len, MPI_CHAR, st.MPI_SOURCE, detail::comm::tag_abort, control_, MPI_STATUS_IGNORE);
    fail(r);
    throw comm_error(rank_, st.MPI_SOURCE, comm_kind_name(r.op),
                     detail::concat("rank ", st.MPI_SOURCE, " aborted: ", why));
  }

  comm_options opts_;
  comm_stats stats_;
  detail::comm::scratch_pool scratch_;
  MPI_Comm data_ = MPI_COMM_NULL, control_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
  bool failed_ = false, aborted_ = false;
  std::string abort_text_;
  std::vector<MPI_Request> receives_;  // posted receives not yet seen complete (withdrawn on failure)
};

}  // namespace weft
