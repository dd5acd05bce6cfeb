// Shared helpers of the pkg/netns addon: the system-error type every operation throws, an owning fd,
// and argument readers. All exported functions run synchronously on the calling JS thread.
#pragma once

#include <napi.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <utility>

namespace netns {

// Mesh error codes; the strings must match pkg/errors/codes.ts.
inline constexpr const char* kCodeOpen = "MESH_ERR_NETNS_OPEN";
inline constexpr const char* kCodeSetns = "MESH_ERR_NETNS_SETNS";
inline constexpr const char* kCodeSocket = "MESH_ERR_NETNS_SOCKET";
inline constexpr const char* kCodeOriginalDst = "MESH_ERR_NETNS_ORIGINAL_DST";
inline constexpr const char* kCodeSeqpacket = "MESH_ERR_NETNS_SEQPACKET";

// A failed system call. Thrown by the plain C++ helpers (no JS objects are touched while a thread sits in
// a foreign namespace) and turned into a JS Error by Guard() at the N-API boundary. The JS error carries
// `meshCode`, `op`, `target`, `errno` (name, e.g. "EPERM"), `errnoNumber` and `description` (strerror);
// pkg/netns/index.ts wraps it into a MeshError.
struct SysError {
  const char* code;
  std::string op;
  std::string target;
  int err;
};

// "EADDRINUSE" for EADDRINUSE; "E<number>" for errnos outside the table.
std::string ErrnoName(int err);

Napi::Error ToJsError(Napi::Env env, const SysError& e);

// Runs `fn` and converts SysError into a thrown JS error. Every exported function goes through it.
template <typename Fn>
Napi::Value Guard(const Napi::CallbackInfo& info, Fn&& fn) {
  try {
    return fn();
  } catch (const SysError& e) {
    throw ToJsError(info.Env(), e);
  }
}

// An owned file descriptor, closed on destruction unless released.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { Reset(); }
  int Get() const { return fd_; }
  int Release() { return std::exchange(fd_, -1); }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

// Argument readers; they throw a JS TypeError on a wrong type (the TS layer validates first, so these are
// a second line of defence against misuse of the raw addon).
int32_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name);
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);
int32_t PropInt(const Napi::Object& o, const char* name, int32_t dflt);
bool PropBool(const Napi::Object& o, const char* name, bool dflt);
std::string PropString(const Napi::Object& o, const char* name, const std::string& dflt);

void InitNetns(Napi::Env env, Napi::Object exports);
void InitSeqpacket(Napi::Env env, Napi::Object exports);

}  // namespace netns
