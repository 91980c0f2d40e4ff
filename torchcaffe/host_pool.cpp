// torch's CPU allocator for large blocks, as torchcaffe's host-memory policy
// `pool` installs it (host_memory.py has the why and the figures).
//
// A block of at least `min_block` bytes is memory mapped for it alone, so
// large blocks never fragment a heap. A freed block stays mapped and resident
// (the next pass writes its pages without faulting them in) and serves later
// requests: the same size as it is, a smaller one from its front (the rest
// stays kept), and a larger one together with other kept blocks, whose pages
// mremap moves side by side into one range without copying or faulting.
// Fresh pages are mapped only when nothing is kept, so the resident total of
// large blocks never passes the most bytes ever in use at once.
//
// A piece is a range inside one kernel mapping (mremap moves only such
// ranges). A block gathered from many pieces is unmapped when freed, not
// kept, as is any block while the pieces in all add up to many: the kernel
// caps a process's mappings (vm.max_map_count, 65530 by default).
// Smaller requests go to the allocator installed before.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include <pthread.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

constexpr size_t kPage = 4096;
// a gathered block of more pieces than this is unmapped when freed
constexpr size_t kMaxPieces = 64;
// ... and any block while the pool's ranges hold more pieces than this
constexpr size_t kMaxTotalPieces = 16384;

size_t round_up(size_t n) { return (n + kPage - 1) / kPage * kPage; }

struct Piece {
  char* addr;
  size_t size;
};

// a contiguous range of pages, one or more pieces
struct Range {
  char* addr = nullptr;
  size_t size = 0;
  std::vector<Piece> pieces;
};

// the first `n` bytes of `range` (n a page multiple below its size); `range`
// keeps the rest
Range split_front(Range& range, size_t n) {
  Range front;
  front.addr = range.addr;
  front.size = n;
  size_t need = n, i = 0;
  for (; need > 0; ++i) {
    Piece& piece = range.pieces[i];
    if (piece.size <= need) {
      front.pieces.push_back(piece);
      need -= piece.size;
    } else {
      front.pieces.push_back({piece.addr, need});
      piece.addr += need;
      piece.size -= need;
      need = 0;
      break;
    }
  }
  range.pieces.erase(range.pieces.begin(), range.pieces.begin() + i);
  range.addr += n;
  range.size -= n;
  return front;
}

void unmap(const Range& range) { munmap(range.addr, range.size); }

struct Stats {
  size_t in_use = 0, kept = 0, high_water = 0;
  size_t mapped = 0, moves = 0, unmapped = 0;
  size_t pieces = 0;  // in the ranges in use and kept
};

class PoolAllocator final : public c10::Allocator {
 public:
  PoolAllocator(c10::Allocator* fallback, size_t min_block)
      : fallback_(fallback),
        fallback_raw_deleter_(fallback->raw_deleter()),
        min_block_(round_up(min_block)) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < min_block_) return fallback_->allocate(n);
    void* p = take(round_up(n));
    return {p, p, &release, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &release; }

  void copy_data(void* dest, const void* src, size_t count) const override {
    std::memcpy(dest, src, count);
  }

  static void release(void* p);
  void give_back(void* p);
  // held across fork(), so a child never inherits it locked mid-update
  void lock() { mutex_.lock(); }
  void unlock() { mutex_.unlock(); }
  void trim();
  Stats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

 private:
  void* take(size_t size);
  Range gather(size_t size);
  void keep(Range range);
  Range unkeep(std::multimap<size_t, Range>::iterator it);

  c10::Allocator* fallback_;
  c10::DeleterFnPtr fallback_raw_deleter_;
  size_t min_block_;
  std::mutex mutex_;
  std::unordered_map<char*, Range> live_;
  std::multimap<size_t, Range> kept_;  // by size
  Stats stats_;
};

PoolAllocator* g_pool = nullptr;

void PoolAllocator::keep(Range range) {
  stats_.kept += range.size;
  stats_.pieces += range.pieces.size();
  kept_.emplace(range.size, std::move(range));
}

Range PoolAllocator::unkeep(std::multimap<size_t, Range>::iterator it) {
  Range range = std::move(it->second);
  kept_.erase(it);
  stats_.kept -= range.size;
  stats_.pieces -= range.pieces.size();
  return range;
}

void* PoolAllocator::take(size_t size) {
  std::lock_guard<std::mutex> lock(mutex_);
  Range range;
  auto fit = kept_.lower_bound(size);
  if (fit != kept_.end()) {
    range = unkeep(fit);
    if (range.size - size >= min_block_) {
      Range front = split_front(range, size);
      keep(std::move(range));
      range = std::move(front);
    }  // else the whole range: a little larger than asked
  } else {
    range = gather(size);
  }
  char* p = range.addr;
  stats_.in_use += range.size;
  stats_.pieces += range.pieces.size();
  if (stats_.in_use > stats_.high_water) stats_.high_water = stats_.in_use;
  live_.emplace(p, std::move(range));
  return p;
}

// `size` bytes from all kept ranges (each smaller than `size`), largest first,
// moved side by side; fresh pages for what they lack
Range PoolAllocator::gather(size_t size) {
  Range out;
  out.size = size;
  void* reserved = mmap(nullptr, size, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) {
    TORCH_CHECK_WITH(OutOfMemoryError, false, "host memory pool: cannot reserve ", size,
                     " bytes: ", std::strerror(errno));
  }
  out.addr = static_cast<char*>(reserved);
  char* dst = out.addr;
  size_t need = size;
  while (need > 0 && !kept_.empty()) {
    Range source = unkeep(std::prev(kept_.end()));
    if (source.size > need) {
      Range front = split_front(source, need);
      if (source.size >= min_block_) {
        keep(std::move(source));
      } else {
        unmap(source);
        stats_.unmapped += source.size;
      }
      source = std::move(front);
    }
    for (const Piece& piece : source.pieces) {
      void* moved = mremap(piece.addr, piece.size, piece.size,
                           MREMAP_MAYMOVE | MREMAP_FIXED, dst);
      if (moved == MAP_FAILED) {
        // not expected; the reservation still covers dst, so fill it fresh
        munmap(piece.addr, piece.size);
        stats_.unmapped += piece.size;
        mmap(dst, piece.size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        stats_.mapped += piece.size;
      } else {
        stats_.moves++;
      }
      out.pieces.push_back({dst, piece.size});
      dst += piece.size;
      need -= piece.size;
    }
  }
  if (need > 0) {
    if (mmap(dst, need, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
             -1, 0) == MAP_FAILED) {
      int error = errno;
      unmap(out);
      TORCH_CHECK_WITH(OutOfMemoryError, false, "host memory pool: mmap of ", need,
                       " bytes failed: ", std::strerror(error));
    }
    out.pieces.push_back({dst, need});
    stats_.mapped += need;
  }
  return out;
}

void PoolAllocator::give_back(void* p) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto it = live_.find(static_cast<char*>(p));
  if (it == live_.end()) {
    lock.unlock();
    fallback_raw_deleter_(p);  // a small block handed out by raw_allocate
    return;
  }
  Range range = std::move(it->second);
  live_.erase(it);
  stats_.in_use -= range.size;
  stats_.pieces -= range.pieces.size();
  if (range.pieces.size() > kMaxPieces || stats_.pieces > kMaxTotalPieces) {
    unmap(range);
    stats_.unmapped += range.size;
  } else {
    keep(std::move(range));
  }
}

void PoolAllocator::trim() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& entry : kept_) {
    unmap(entry.second);
    stats_.unmapped += entry.second.size;
    stats_.pieces -= entry.second.pieces.size();
  }
  kept_.clear();
  stats_.kept = 0;
  stats_.high_water = stats_.in_use;
}

void PoolAllocator::release(void* p) {
  if (p != nullptr) g_pool->give_back(p);
}

}  // namespace

extern "C" {

// Install the pool as torch's CPU allocator (once); 0 on success.
int torchcaffe_pool_install(size_t min_block) {
  if (g_pool != nullptr) return 0;
  c10::Allocator* fallback = c10::GetCPUAllocator();
  if (fallback == nullptr || fallback->raw_deleter() == nullptr) return 1;
  g_pool = new PoolAllocator(fallback, min_block);
  pthread_atfork([] { g_pool->lock(); }, [] { g_pool->unlock(); }, [] { g_pool->unlock(); });
  c10::SetCPUAllocator(g_pool, /*priority=*/1);
  return c10::GetCPUAllocator() == g_pool ? 0 : 2;
}

// Unmap every kept block; the high-water mark falls to what is in use.
void torchcaffe_pool_trim() {
  if (g_pool != nullptr) g_pool->trim();
}

// bytes in use, kept and at the high-water mark; bytes mapped fresh, pieces
// moved, bytes unmapped
void torchcaffe_pool_stats(size_t* out) {
  Stats s = g_pool != nullptr ? g_pool->stats() : Stats{};
  size_t values[] = {s.in_use, s.kept, s.high_water, s.mapped, s.moves, s.unmapped};
  std::memcpy(out, values, sizeof(values));
}

}  // extern "C"
