// Unix SOCK_SEQPACKET sockets with SCM_RIGHTS, driven by the libuv loop of the calling JS thread through a
// uv_poll_t per socket (no extra threads, no busy polling).
//
// Functions: seqpacketListen(path, backlog) -> fd, seqpacketConnect(path) -> fd, seqpacketPair() -> [fd, fd],
// dupFd(fd) -> fd. Class SeqpacketHandle(fd, listening, onEvent) owns the fd and reports, through
// onEvent(kind, a, b): 'connection' (fd), 'message' (Buffer, fds[]), 'end', 'error' (Error), 'writable'.
// After 'end' or 'error' the handle stops polling; the owner is expected to close() it.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <uv.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "common.h"

namespace netns {
namespace {

constexpr size_t kMaxMessage = 64 * 1024;  // SEQPACKET_MAX_MESSAGE in index.ts
constexpr size_t kMaxFds = 64;             // SEQPACKET_MAX_FDS in index.ts
constexpr int kBatch = 64;                 // messages or accepts handled per loop wakeup

sockaddr_un UnixAddr(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path) throw SysError{kCodeSeqpacket, "bind", path, ENAMETOOLONG};
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

UniqueFd NewSeqpacket() {
  UniqueFd fd(::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.Get() < 0) throw SysError{kCodeSeqpacket, "socket", "AF_UNIX SOCK_SEQPACKET", errno};
  return fd;
}

// seqpacketListen(path, backlog) -> listening fd. A stale socket file (nobody accepting) is removed; a live
// one is EADDRINUSE; a non-socket file at the path is never removed (EEXIST).
Napi::Value SeqpacketListen(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  int backlog = ArgInt(info, 1, "backlog");
  return Guard(info, [&]() -> Napi::Value {
    sockaddr_un addr = UnixAddr(path);
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) throw SysError{kCodeSeqpacket, "listen (path exists and is not a socket)", path, EEXIST};
      UniqueFd probe = NewSeqpacket();
      if (::connect(probe.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 || errno == EAGAIN ||
          errno == EPROTOTYPE) {
        throw SysError{kCodeSeqpacket, "listen (another process accepts on the path)", path, EADDRINUSE};
      }
      if (errno != ECONNREFUSED && errno != ENOENT) throw SysError{kCodeSeqpacket, "connect (stale check)", path, errno};
      if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw SysError{kCodeSeqpacket, "unlink", path, errno};
    } else if (errno != ENOENT) {
      throw SysError{kCodeSeqpacket, "lstat", path, errno};
    }
    UniqueFd fd = NewSeqpacket();
    if (::bind(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw SysError{kCodeSeqpacket, "bind", path, errno};
    }
    if (::listen(fd.Get(), backlog) != 0) {
      int err = errno;
      ::unlink(path.c_str());
      throw SysError{kCodeSeqpacket, "listen", path, err};
    }
    return Napi::Number::New(info.Env(), fd.Release());
  });
}

// seqpacketConnect(path) -> connected fd. Unix connects complete immediately; a full backlog is EAGAIN.
Napi::Value SeqpacketConnect(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return Guard(info, [&]() -> Napi::Value {
    sockaddr_un addr = UnixAddr(path);
    UniqueFd fd = NewSeqpacket();
    int rc;
    do {
      rc = ::connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) throw SysError{kCodeSeqpacket, "connect", path, errno};
    return Napi::Number::New(info.Env(), fd.Release());
  });
}

// seqpacketPair() -> [fd, fd]: a connected pair (socketpair), both non-blocking and close-on-exec.
Napi::Value SeqpacketPair(const Napi::CallbackInfo& info) {
  return Guard(info, [&]() -> Napi::Value {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
      throw SysError{kCodeSeqpacket, "socketpair", "AF_UNIX SOCK_SEQPACKET", errno};
    }
    Napi::Array r = Napi::Array::New(info.Env(), 2);
    r.Set(0u, fds[0]);
    r.Set(1u, fds[1]);
    return r;
  });
}

// dupFd(fd) -> a close-on-exec duplicate (used to keep queued SCM_RIGHTS fds valid until they are sent).
Napi::Value DupFd(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  return Guard(info, [&]() -> Napi::Value {
    int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0) throw SysError{kCodeSeqpacket, "fcntl(F_DUPFD_CLOEXEC)", "fd " + std::to_string(fd), errno};
    return Napi::Number::New(info.Env(), d);
  });
}

class SeqpacketHandle;

// The libuv handle lives in its own allocation: uv_close completes asynchronously, possibly after the
// SeqpacketHandle was garbage collected, and then frees this block.
struct PollBlock {
  uv_poll_t poll;
  SeqpacketHandle* owner;
};

class SeqpacketHandle : public Napi::ObjectWrap<SeqpacketHandle> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "SeqpacketHandle",
                       {
                           InstanceMethod<&SeqpacketHandle::Send>("send"),
                           InstanceMethod<&SeqpacketHandle::SetWritable>("setWritable"),
                           InstanceMethod<&SeqpacketHandle::RefJs>("ref"),
                           InstanceMethod<&SeqpacketHandle::UnrefJs>("unref"),
                           InstanceMethod<&SeqpacketHandle::CloseJs>("close"),
                           InstanceAccessor<&SeqpacketHandle::FdGetter>("fd"),
                       });
  }

  // new SeqpacketHandle(fd, listening, onEvent): takes ownership of fd and starts polling it for input.
  explicit SeqpacketHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<SeqpacketHandle>(info) {
    Napi::Env env = info.Env();
    int fd = ArgInt(info, 0, "fd");
    if (info.Length() < 3 || !info[1].IsBoolean() || !info[2].IsFunction()) {
      throw Napi::TypeError::New(env, "netns addon: SeqpacketHandle(fd, listening, onEvent) expected");
    }
    listening_ = info[1].As<Napi::Boolean>().Value();
    on_event_ = Napi::Persistent(info[2].As<Napi::Function>());
    // No resource object: napi_async_init with `this` as resource keeps `this` strongly reachable in Node 24,
    // so a closed handle would never be collected.
    context_ = std::make_unique<Napi::AsyncContext>(env, listening_ ? "SeqpacketServer" : "SeqpacketSocket");
    uv_loop_t* loop = nullptr;
    if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
      throw Napi::Error::New(env, "netns addon: no libuv loop");
    }
    // Everything that can fail happens before the fd is adopted: a throwing constructor leaves it to the caller.
    auto block = std::make_unique<PollBlock>();
    block->owner = this;
    int rc = uv_poll_init(loop, &block->poll, fd);
    if (rc != 0) throw ToJsError(env, SysError{kCodeSeqpacket, "uv_poll_init", "fd " + std::to_string(fd), -rc});
    block->poll.data = block.get();
    rc = uv_poll_start(&block->poll, UV_READABLE, OnPoll);
    if (rc != 0) {
      block->owner = nullptr;
      uv_close(reinterpret_cast<uv_handle_t*>(&block.release()->poll),
               [](uv_handle_t* h) { delete static_cast<PollBlock*>(h->data); });
      throw ToJsError(env, SysError{kCodeSeqpacket, "uv_poll_start", "fd " + std::to_string(fd), -rc});
    }
    if (!listening_) buf_ = std::make_unique<char[]>(kMaxMessage);
    fd_ = fd;  // owned from here on
    block_ = block.release();
    // An active socket must stay alive while the loop may call into it, even if JS dropped every reference.
    Ref();
    napi_add_env_cleanup_hook(env, EnvCleanup, this);
    hook_registered_ = true;
  }

  ~SeqpacketHandle() override { CloseNative(); }

 private:
  static void EnvCleanup(void* arg) {
    auto* self = static_cast<SeqpacketHandle*>(arg);
    self->hook_registered_ = false;
    self->CloseNative();
  }

  // Stops polling, releases the uv handle and closes the fd. Touches no JS; safe from the destructor.
  void CloseNative() {
    if (block_ != nullptr) {
      block_->owner = nullptr;
      uv_poll_stop(&block_->poll);
      uv_close(reinterpret_cast<uv_handle_t*>(&block_->poll),
               [](uv_handle_t* h) { delete static_cast<PollBlock*>(h->data); });
      block_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
    if (hook_registered_) {
      hook_registered_ = false;
      napi_remove_env_cleanup_hook(Env(), EnvCleanup, this);
    }
  }

  void StartPolling() {
    if (block_ == nullptr) return;
    int events = UV_READABLE | (want_writable_ ? UV_WRITABLE : 0);
    int rc = uv_poll_start(&block_->poll, events, OnPoll);
    if (rc != 0) throw SysError{kCodeSeqpacket, "uv_poll_start", "fd " + std::to_string(fd_), -rc};
  }

  void StopPolling() {
    if (block_ != nullptr) uv_poll_stop(&block_->poll);
    stopped_ = true;
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) {
    auto* block = static_cast<PollBlock*>(handle->data);
    SeqpacketHandle* self = block->owner;
    if (self == nullptr || self->fd_ < 0) return;
    Napi::Env env = self->Env();
    Napi::HandleScope scope(env);
    Napi::Object keep = self->Value();  // pins the object for the duration of the callbacks
    (void)keep;
    if (self->listening_) {
      self->DoAccept();
      return;
    }
    // On a poll error (libuv reports POLLERR as a status and stops the watcher) read anyway: pending
    // messages come first, then recvmsg reports the socket error or EOF.
    if (status < 0 || (events & UV_READABLE)) {
      if (!self->DoRecv(status < 0)) return;
    }
    if (self->Alive() && (events & UV_WRITABLE) && self->want_writable_) {
      self->Emit({Napi::String::New(env, "writable")});
    }
  }

  bool Alive() const { return fd_ >= 0 && !stopped_; }

  // Calls onEvent(args...). A throwing listener becomes an uncaught exception (as for Node's own sockets).
  // Returns true if the handle is still open and polling afterwards (the callback may have closed it).
  bool Emit(const std::vector<napi_value>& args) {
    if (on_event_.IsEmpty()) return false;
    try {
      on_event_.MakeCallback(Value(), args, *context_);
    } catch (const Napi::Error& e) {
      napi_fatal_exception(Env(), e.Value());
      return false;
    }
    return Alive();
  }

  // Reports a terminal condition ('end' or 'error'): polling stops first, the owner is expected to close().
  void EmitFinal(const char* kind, napi_value arg) {
    StopPolling();
    Napi::Env env = Env();
    if (arg == nullptr) {
      Emit({Napi::String::New(env, kind)});
    } else {
      Emit({Napi::String::New(env, kind), arg});
    }
  }

  bool EmitError(const SysError& e) {
    EmitFinal("error", ToJsError(Env(), e).Value());
    return false;
  }

  void DoAccept() {
    Napi::Env env = Env();
    for (int i = 0; i < kBatch && Alive(); i++) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if (errno == EINTR || errno == ECONNABORTED) continue;
        // EMFILE and friends: report, keep listening (the connection stays queued in the kernel).
        Napi::Error err = ToJsError(env, SysError{kCodeSeqpacket, "accept", "fd " + std::to_string(fd_), errno});
        Emit({Napi::String::New(env, "error"), err.Value()});
        return;
      }
      if (!Emit({Napi::String::New(env, "connection"), Napi::Number::New(env, c)})) return;
    }
  }

  // Reads up to kBatch messages. Returns false once the handle stopped (EOF, error, close, throw).
  bool DoRecv(bool poll_error) {
    Napi::Env env = Env();
    for (int i = 0; i < kBatch; i++) {
      if (!Alive()) return false;
      alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
      iovec iov{buf_.get(), kMaxMessage};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = cbuf;
      msg.msg_controllen = sizeof cbuf;
      ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
      if (n < 0) {
        int err = errno;
        if (err == EINTR) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) {
          if (!poll_error) return true;
          int soerr = 0;
          socklen_t len = sizeof soerr;
          if (::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr != 0) err = soerr;
          else err = EIO;
        }
        return EmitError(SysError{kCodeSeqpacket, "recvmsg", "fd " + std::to_string(fd_), err});
      }
      std::vector<int> fds;
      for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
          size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
          const unsigned char* data = CMSG_DATA(c);
          for (size_t k = 0; k < count; k++) {
            int fd;
            std::memcpy(&fd, data + k * sizeof(int), sizeof(int));
            fds.push_back(fd);
          }
        }
      }
      bool truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
      if (truncated) {
        for (int fd : fds) ::close(fd);  // never deliver half a message, never leak its fds
        std::string what = (msg.msg_flags & MSG_TRUNC)
                               ? "message of " + std::to_string(n) + " bytes exceeds " + std::to_string(kMaxMessage)
                               : "message carries more than " + std::to_string(kMaxFds) + " fds";
        return EmitError(SysError{kCodeSeqpacket, "recvmsg (truncated)", what, EMSGSIZE});
      }
      if (n == 0 && fds.empty() && msg.msg_controllen == 0) {
        EmitFinal("end", nullptr);
        return false;
      }
      Napi::Buffer<char> data = Napi::Buffer<char>::Copy(env, buf_.get(), static_cast<size_t>(n));
      Napi::Array arr = Napi::Array::New(env, fds.size());
      for (size_t k = 0; k < fds.size(); k++) arr.Set(static_cast<uint32_t>(k), fds[k]);
      if (!Emit({Napi::String::New(env, "message"), data, arr})) return false;
    }
    return true;  // more may be pending; the level-triggered poll wakes us again
  }

  // send(buffer, fds[]) -> true if sent, false if the socket buffer is full (nothing was sent).
  Napi::Value Send(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsArray()) {
      throw Napi::TypeError::New(env, "netns addon: send(buffer, fds[]) expected");
    }
    auto data = info[0].As<Napi::Buffer<char>>();
    auto arr = info[1].As<Napi::Array>();
    return Guard(info, [&]() -> Napi::Value {
      if (fd_ < 0) throw SysError{kCodeSeqpacket, "sendmsg", "closed socket", EBADF};
      if (data.Length() > kMaxMessage) throw SysError{kCodeSeqpacket, "sendmsg", "message too large", EMSGSIZE};
      if (arr.Length() > kMaxFds) throw SysError{kCodeSeqpacket, "sendmsg", "too many fds", EINVAL};
      std::vector<int> fds;
      for (uint32_t k = 0; k < arr.Length(); k++) {
        Napi::Value v = arr.Get(k);
        if (!v.IsNumber()) throw Napi::TypeError::New(env, "netns addon: fds must be numbers");
        fds.push_back(v.As<Napi::Number>().Int32Value());
      }
      iovec iov{data.Data(), data.Length()};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxFds)];
      if (!fds.empty()) {
        std::memset(cbuf, 0, sizeof cbuf);
        msg.msg_control = cbuf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
      }
      ssize_t n;
      do {
        n = ::sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
      } while (n < 0 && errno == EINTR);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
        throw SysError{kCodeSeqpacket, "sendmsg", "fd " + std::to_string(fd_), errno};
      }
      return Napi::Boolean::New(env, true);
    });
  }

  // setWritable(on): also poll for writability (a 'writable' event) while sends are queued.
  Napi::Value SetWritable(const Napi::CallbackInfo& info) {
    bool on = info.Length() > 0 && info[0].ToBoolean().Value();
    return Guard(info, [&]() -> Napi::Value {
      want_writable_ = on;
      if (fd_ >= 0 && !stopped_) StartPolling();
      return info.Env().Undefined();
    });
  }

  Napi::Value RefJs(const Napi::CallbackInfo& info) {
    if (block_ != nullptr) uv_ref(reinterpret_cast<uv_handle_t*>(&block_->poll));
    return info.Env().Undefined();
  }

  Napi::Value UnrefJs(const Napi::CallbackInfo& info) {
    if (block_ != nullptr) uv_unref(reinterpret_cast<uv_handle_t*>(&block_->poll));
    return info.Env().Undefined();
  }

  // close(): idempotent; stops polling, closes the fd and lets the object be collected.
  Napi::Value CloseJs(const Napi::CallbackInfo& info) {
    bool was_open = fd_ >= 0 || block_ != nullptr;
    CloseNative();
    // Drop the callback: it closes over the JS owner, which holds this object; keeping it would pin the cycle.
    on_event_.Reset();
    if (!released_) {
      released_ = true;
      Unref();
    }
    return Napi::Boolean::New(info.Env(), was_open);
  }

  Napi::Value FdGetter(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_); }

  int fd_ = -1;
  bool listening_ = false;
  bool stopped_ = false;
  bool want_writable_ = false;
  bool released_ = false;
  bool hook_registered_ = false;
  PollBlock* block_ = nullptr;
  std::unique_ptr<char[]> buf_;
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> context_;
};

}  // namespace

void InitSeqpacket(Napi::Env env, Napi::Object exports) {
  exports.Set("seqpacketListen", Napi::Function::New(env, SeqpacketListen, "seqpacketListen"));
  exports.Set("seqpacketConnect", Napi::Function::New(env, SeqpacketConnect, "seqpacketConnect"));
  exports.Set("seqpacketPair", Napi::Function::New(env, SeqpacketPair, "seqpacketPair"));
  exports.Set("dupFd", Napi::Function::New(env, DupFd, "dupFd"));
  exports.Set("SeqpacketHandle", SeqpacketHandle::Define(env));
  exports.Set("maxMessage", Napi::Number::New(env, static_cast<double>(kMaxMessage)));
  exports.Set("maxFds", Napi::Number::New(env, static_cast<double>(kMaxFds)));
}

}  // namespace netns
