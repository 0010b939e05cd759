// weft/comm/nccl.hpp - the NCCL communicator (include explicitly, compile with nvcc or a CUDA
// toolkit on the include path; link weft::nccl). Compiled and linked in CI, not yet verified on
// hardware.
//
//   ncclComm_t nc; ncclCommInitRank(&nc, world, id, rank);
//   weft::nccl_communicator comm(nc, stream, {.timeout = std::chrono::seconds(30)});
//   comm.all_reduce(std::span(device_grad, n));           // ncclAllReduce on `stream`, waited
//   auto r = comm.irecv(std::span(dev_buf, n), left);      // device pointers
//   auto s = comm.isend(std::span<const float>(dev_blk, n), right);
//   comm.wait(r); comm.wait(s);                             // both in one NCCL group
//
// Grouping: NCCL's point-to-point calls block the stream until matched, so a ring step whose
// receive and send were issued separately would deadlock. isend / irecv are therefore queued,
// and the queue is issued as one ncclGroupStart / ncclGroupEnd at the next wait, test or
// collective: every send / receive pair posted together travels together. NCCL has no tags:
// messages between two ranks match in posting order (the tag argument is accepted and ignored).
//
// Time-outs: a wait polls a CUDA event recorded after the operation, and ncclCommGetAsyncError;
// past the time-out (or on an asynchronous NCCL error) it calls ncclCommAbort, which NCCL
// requires to release the stuck kernels, and throws weft::comm_error. abort() does the same;
// NCCL gives no side channel, so the peers learn of it at their own time-out. The communicator
// does not own the ncclComm_t while all is well (the caller destroys it); once aborted()
// returns true, NCCL has freed it and the caller must not call ncclCommDestroy on it. Use a
// blocking NCCL communicator (the default): with a non-blocking one, operations may still be
// in progress when ncclGroupEnd returns.
//
// Buffers are device memory: weft's own host collectives do not apply, and weft::all_reduce
// and the other free functions call NCCL's collectives for this communicator.
#pragma once

#include <cuda_runtime.h>
#include <nccl.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "weft/comm/communicator.hpp"
#include "weft/core/dtype.hpp"

namespace weft {

namespace detail::comm {

template <class T>
ncclDataType_t nccl_type() {
  if constexpr (std::is_same_v<T, float>)
    return ncclFloat32;
  else if constexpr (std::is_same_v<T, double>)
    return ncclFloat64;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return ncclInt32;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return ncclInt64;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return ncclUint8;
  else if constexpr (std::is_same_v<T, weft::f16>)
    return ncclFloat16;
#if NCCL_MAJOR > 2 || (NCCL_MAJOR == 2 && NCCL_MINOR >= 10)
  else if constexpr (std::is_same_v<T, weft::bf16>)
    return ncclBfloat16;
#endif
  else
    static_assert(sizeof(T) == 0, "weft::nccl_communicator: unsupported element type");
}

inline ncclRedOp_t nccl_op(reduce_op op) {
  switch (op) {
    case reduce_op::sum:
      return ncclSum;
    case reduce_op::max:
      return ncclMax;
    case reduce_op::min:
      return ncclMin;
  }
  return ncclSum;
}

}  // namespace detail::comm

class nccl_communicator {
 public:
  static constexpr bool host_memory = false;

  /// A batch of operations issued together; its event completes when they have.
  struct batch {
    cudaEvent_t event = nullptr;
    bool issued = false;
    ~batch() {
      if (event) cudaEventDestroy(event);
    }
  };
  struct request {
    std::shared_ptr<batch> b;
    comm_kind op = comm_kind::send;
    int peer = -1;
    std::int64_t bytes = 0;
    detail::comm::clock::time_point start{};
  };

  nccl_communicator(ncclComm_t comm, cudaStream_t stream, comm_options opts = {})
      : comm_(comm), stream_(stream), opts_(opts), stats_(opts.stats_capacity) {
    call(ncclCommUserRank(comm_, &rank_), "ncclCommUserRank", -1);
    call(ncclCommCount(comm_, &size_), "ncclCommCount", -1);
  }
  nccl_communicator(const nccl_communicator&) = delete;
  nccl_communicator& operator=(const nccl_communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const comm_options& options() const { return opts_; }
  const comm_stats& stats() const { return stats_; }
  comm_stats& stats() { return stats_; }
  static constexpr const char* name() { return "nccl"; }
  cudaStream_t stream() const { return stream_; }
  /// True once this communicator has called ncclCommAbort (do not destroy the ncclComm_t then).
  bool aborted() const { return aborted_; }

  template <class T>
  request isend(std::span<const T> data, int peer, int /*tag*/ = 0) {
    return queue(true, const_cast<T*>(data.data()), data.size_bytes(), peer);
  }
  template <class T>
  request isend(std::span<T> data, int peer, int tag = 0) {
    return isend(std::span<const T>(data), peer, tag);
  }
  template <class T>
  request irecv(std::span<T> data, int peer, int /*tag*/ = 0) {
    return queue(false, data.data(), data.size_bytes(), peer);
  }

  bool test(request& r) {
    if (!r.b) return true;
    flush();
    const cudaError_t e = cudaEventQuery(r.b->event);
    if (e == cudaErrorNotReady) {
      check_async(r);
      return false;
    }
    if (e != cudaSuccess) fail(r, cudaGetErrorString(e));
    stats_.add({r.op, r.peer, r.bytes, detail::comm::seconds_since(r.start)});
    r.b.reset();
    return true;
  }

  void wait(request& r) {
    if (!r.b) return;
    flush();
    const auto deadline = detail::comm::clock::now() + opts_.timeout;
    bool done = false;
    const bool ok = detail::comm::poll_until(
        deadline, [&] { return done = test(r); }, [] {});
    if (!ok && !done) {
      abort_comm();
      throw comm_error(rank_, r.peer, comm_kind_name(r.op),
                       detail::comm::timeout_message(r.bytes, opts_.timeout));
    }
  }

  /// Aborts the NCCL communicator (pending operations are abandoned; the peers time out).
  void abort(const std::string&) { abort_comm(); }

  template <class T>
  void all_reduce(std::span<T> data, reduce_op op = reduce_op::sum) {
    collective(comm_kind::all_reduce, data.size_bytes(), [&] {
      return ncclAllReduce(data.data(), data.data(), data.size(), detail::comm::nccl_type<T>(),
                           detail::comm::nccl_op(op), comm_, stream_);
    });
  }
  template <class T>
  void all_gather(std::span<const T> send, std::span<T> recv) {
    detail::require(recv.size() == send.size() * static_cast<std::size_t>(size_),
                    "nccl_communicator::all_gather", "recv",
                    detail::concat(size_, " x ", send.size(), " elements"), recv.size());
    collective(comm_kind::all_gather, recv.size_bytes(), [&] {
      return ncclAllGather(send.data(), recv.data(), send.size_bytes(), ncclUint8, comm_, stream_);
    });
  }
  template <class T>
  void reduce_scatter(std::span<const T> send, std::span<T> recv, reduce_op op = reduce_op::sum) {
    detail::require(send.size() == recv.size() * static_cast<std::size_t>(size_),
                    "nccl_communicator::reduce_scatter", "send",
                    detail::concat(size_, " x ", recv.size(), " elements"), send.size());
    collective(comm_kind::reduce_scatter, send.size_bytes(), [&] {
      return ncclReduceScatter(send.data(), recv.data(), recv.size(), detail::comm::nccl_type<T>(),
                               detail::comm::nccl_op(op), comm_, stream_);
    });
  }
  template <class T>
  void all_to_all(std::span<const T> send, std::span<T> recv) {
    detail::require(send.size() % static_cast<std::size_t>(size_) == 0 && recv.size() == send.size(),
                    "nccl_communicator::all_to_all", "send, recv",
                    detail::concat("equal sizes, a multiple of ", size_),
                    detail::concat(send.size(), ", ", recv.size()));
    const std::size_t n = send.size() / static_cast<std::size_t>(size_);
    std::vector<request> rs;
    for (int p = 0; p < size_; ++p) {
      rs.push_back(irecv(recv.subspan(static_cast<std::size_t>(p) * n, n), p));
      rs.push_back(isend(send.subspan(static_cast<std::size_t>(p) * n, n), p));
    }
    for (auto& r : rs) wait(r);
  }
  void barrier() {
    if (!scratch_) {
      void* p = nullptr;
      if (cudaMalloc(&p, sizeof(float)) != cudaSuccess)
        fail(request{}, "cudaMalloc of the barrier's scratch failed");
      scratch_.reset(static_cast<float*>(p));
    }
    all_reduce(std::span<float>(scratch_.get(), 1));
  }

 private:
  struct pending_op {
    bool send;
    void* ptr;
    std::size_t bytes;
    int peer;
  };
  struct cuda_free {
    void operator()(float* p) const { cudaFree(p); }
  };

  request queue(bool send, void* ptr, std::size_t bytes, int peer) {
    detail::require(peer >= 0 && peer < size_, send ? "isend" : "irecv", "peer",
                    detail::concat("a rank in [0, ", size_, ")"), peer);
    usable(send ? "isend" : "irecv", peer);
    if (!open_) {
      open_ = std::make_shared<batch>();
      if (cudaEventCreateWithFlags(&open_->event, cudaEventDisableTiming) != cudaSuccess) {
        fail(request{}, "cudaEventCreate failed");
      }
    }
    pending_.push_back({send, ptr, bytes, peer});
    return request{open_, send ? comm_kind::send : comm_kind::recv, peer, static_cast<std::int64_t>(bytes),
                   detail::comm::clock::now()};
  }

  /// Issues the queued sends and receives as one NCCL group and records their event.
  void flush() {
    if (!open_) return;
    auto b = std::move(open_);
    auto ops = std::move(pending_);
    pending_.clear();
    call(ncclGroupStart(), "ncclGroupStart", -1);
    // The group is always closed, even when an operation in it fails.
    ncclResult_t first = ncclSuccess;
    int first_peer = -1;
    for (const auto& op : ops) {
      const ncclResult_t rc = op.send ? ncclSend(op.ptr, op.bytes, ncclUint8, op.peer, comm_, stream_)
                                      : ncclRecv(op.ptr, op.bytes, ncclUint8, op.peer, comm_, stream_);
      if (rc != ncclSuccess && first == ncclSuccess) {
        first = rc;
        first_peer = op.peer;
      }
    }
    const ncclResult_t end = ncclGroupEnd();
    call(first, "ncclSend/ncclRecv", first_peer);
    call(end, "ncclGroupEnd", -1);
    if (cudaEventRecord(b->event, stream_) != cudaSuccess) fail(request{}, "cudaEventRecord failed");
    b->issued = true;
  }

  template <class Issue>
  void collective(comm_kind op, std::size_t bytes, Issue&& issue) {
    usable(comm_kind_name(op), -1);
    flush();
    request r{std::make_shared<batch>(), op, -1, static_cast<std::int64_t>(bytes),
              detail::comm::clock::now()};
    if (cudaEventCreateWithFlags(&r.b->event, cudaEventDisableTiming) != cudaSuccess)
      fail(r, "cudaEventCreate failed");
    call(issue(), comm_kind_name(op), -1);
    if (cudaEventRecord(r.b->event, stream_) != cudaSuccess) fail(r, "cudaEventRecord failed");
    wait(r);
  }

  void check_async(const request& r) {
    ncclResult_t async = ncclSuccess;
    ncclCommGetAsyncError(comm_, &async);
    if (async != ncclSuccess && async != ncclInProgress) {
      const std::string why = ncclGetErrorString(async);
      abort_comm();
      fail(r, why);
    }
  }

  void abort_comm() {
    if (!aborted_) ncclCommAbort(comm_);
    aborted_ = true;
    failed_ = true;
  }

  void usable(const char* op, int peer) {
    if (failed_) throw comm_error(rank_, peer, op, "the communicator failed earlier; make a new one");
  }
  void call(ncclResult_t code, const char* what, int peer) {
    if (code != ncclSuccess && code != ncclInProgress) {
      failed_ = true;
      throw comm_error(rank_, peer, what, ncclGetErrorString(code));
    }
  }
  [[noreturn]] void fail(const request& r, const std::string& why) {
    failed_ = true;
    throw comm_error(rank_, r.peer, comm_kind_name(r.op), why);
  }

  ncclComm_t comm_;
  cudaStream_t stream_;
  comm_options opts_;
  comm_stats stats_;
  int rank_ = 0, size_ = 1;
  bool failed_ = false, aborted_ = false;
  std::shared_ptr<batch> open_;
  std::vector<pending_op> pending_;
  std::unique_ptr<float, cuda_free> scratch_;
};

}  // namespace weft
