// Network-namespace and TCP socket primitives: open a netns, create listening or outbound TCP sockets inside
// a netns (setns on the calling thread, always switched back), SO_MARK, and SO_ORIGINAL_DST.
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/nsfs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common.h"

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IP_FREEBIND
#define IP_FREEBIND 15
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80  // linux/netfilter_ipv4.h
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80  // linux/netfilter_ipv6/ip6_tables.h
#endif

namespace netns {
namespace {

constexpr const char* kSelfNetns = "/proc/thread-self/ns/net";

// Moves the calling thread into the network namespace `target` and back again when destroyed. If the thread
// already is in `target` nothing is switched (no CAP_SYS_ADMIN needed then). If switching back fails the
// thread would keep running JS in a foreign namespace, which is never acceptable: the process aborts with a
// clear message. That can only happen if the original namespace fd became unusable, which is a bug.
class NetnsSwitch {
 public:
  explicit NetnsSwitch(int target) {
    UniqueFd self(::open(kSelfNetns, O_RDONLY | O_CLOEXEC));
    if (self.Get() < 0) throw SysError{kCodeSetns, "open", kSelfNetns, errno};
    struct stat cur {}, tgt {};
    if (::fstat(self.Get(), &cur) != 0) throw SysError{kCodeSetns, "fstat", kSelfNetns, errno};
    if (::fstat(target, &tgt) != 0) throw SysError{kCodeSetns, "fstat", "netns fd " + std::to_string(target), errno};
    if (cur.st_dev == tgt.st_dev && cur.st_ino == tgt.st_ino) return;  // already there
    if (::setns(target, CLONE_NEWNET) != 0) {
      throw SysError{kCodeSetns, "setns", "netns fd " + std::to_string(target), errno};
    }
    orig_ = std::move(self);
  }
  NetnsSwitch(const NetnsSwitch&) = delete;
  NetnsSwitch& operator=(const NetnsSwitch&) = delete;

  ~NetnsSwitch() {
    if (orig_.Get() < 0) return;
    if (::setns(orig_.Get(), CLONE_NEWNET) != 0) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "BUG: cannot return the thread to its original network namespace: setns: %s",
                    ErrnoName(errno).c_str());
      napi_fatal_error("pkg/netns NetnsSwitch", NAPI_AUTO_LENGTH, msg, NAPI_AUTO_LENGTH);
    }
  }

 private:
  UniqueFd orig_;
};

struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family = 0;
};

std::string HostPort(const std::string& host, int port) {
  return host.find(':') != std::string::npos ? "[" + host + "]:" + std::to_string(port)
                                             : host + ":" + std::to_string(port);
}

// Parses a numeric IPv4 or IPv6 address (no names, no scope ids).
SockAddr ParseAddr(const std::string& host, int port, const char* code) {
  SockAddr a;
  if (port < 0 || port > 65535) throw SysError{code, "parse", HostPort(host, port), EINVAL};
  auto* sin = reinterpret_cast<sockaddr_in*>(&a.ss);
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
  if (::inet_pton(AF_INET, host.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(static_cast<uint16_t>(port));
    a.len = sizeof(sockaddr_in);
    a.family = AF_INET;
  } else if (::inet_pton(AF_INET6, host.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    a.len = sizeof(sockaddr_in6);
    a.family = AF_INET6;
  } else {
    throw SysError{code, "parse", HostPort(host, port), EINVAL};
  }
  return a;
}

void SetOpt(int fd, int level, int name, int value, const char* what) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) {
    throw SysError{kCodeSocket, std::string("setsockopt(") + what + ")", "", errno};
  }
}

void SetMarkOpt(int fd, uint32_t mark) {
  if (::setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) != 0) {
    throw SysError{kCodeSocket, "setsockopt(SO_MARK)", "", errno};
  }
}

// Options shared by listening and outbound sockets, read from the JS options object.
struct SockOpts {
  int netns = -1;
  bool has_mark = false;
  uint32_t mark = 0;
  bool transparent = false;
  bool freebind = false;
};

SockOpts ReadSockOpts(const Napi::Object& o) {
  SockOpts s;
  s.netns = PropInt(o, "netns", -1);
  Napi::Value m = o.Get("mark");
  if (!m.IsUndefined() && !m.IsNull()) {
    if (!m.IsNumber()) throw Napi::TypeError::New(o.Env(), "netns addon: option mark must be a number");
    s.has_mark = true;
    s.mark = m.As<Napi::Number>().Uint32Value();
  }
  s.transparent = PropBool(o, "transparent", false);
  s.freebind = PropBool(o, "freebind", false);
  return s;
}

void ApplyCommon(int fd, int family, const SockOpts& s) {
  if (s.has_mark) SetMarkOpt(fd, s.mark);
  if (s.transparent) {
    if (family == AF_INET6) {
      SetOpt(fd, SOL_IPV6, IPV6_TRANSPARENT, 1, "IPV6_TRANSPARENT");
    } else {
      SetOpt(fd, SOL_IP, IP_TRANSPARENT, 1, "IP_TRANSPARENT");
    }
  }
  if (s.freebind) {
    if (family == AF_INET6) {
      SetOpt(fd, SOL_IPV6, IPV6_FREEBIND, 1, "IPV6_FREEBIND");
    } else {
      SetOpt(fd, SOL_IP, IP_FREEBIND, 1, "IP_FREEBIND");
    }
  }
}

// openNetns(path) -> fd. Opens O_RDONLY|O_CLOEXEC and checks with NS_GET_NSTYPE that it is a network namespace.
Napi::Value OpenNetns(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  return Guard(info, [&]() -> Napi::Value {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.Get() < 0) throw SysError{kCodeOpen, "open", path, errno};
    int type = ::ioctl(fd.Get(), NS_GET_NSTYPE);
    if (type < 0) {
      // ENOTTY: not an nsfs file at all.
      throw SysError{kCodeOpen, "ioctl(NS_GET_NSTYPE)", path, errno == ENOTTY ? EINVAL : errno};
    }
    if (type != CLONE_NEWNET) throw SysError{kCodeOpen, "open (not a network namespace)", path, EINVAL};
    return Napi::Number::New(info.Env(), fd.Release());
  });
}

// closeFd(fd): close(2). EBADF is reported (closing twice is a bug in the caller).
Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  return Guard(info, [&]() -> Napi::Value {
    if (fd < 0 || ::close(fd) != 0) throw SysError{kCodeSocket, "close", "fd " + std::to_string(fd), fd < 0 ? EBADF : errno};
    return info.Env().Undefined();
  });
}

// listenTcp({ netns, host, port, backlog, mark?, reusePort, transparent, freebind, ipv6Only? }) -> fd
Napi::Value ListenTcp(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(info.Env(), "netns addon: options expected");
  Napi::Object o = info[0].As<Napi::Object>();
  SockOpts s = ReadSockOpts(o);
  std::string host = PropString(o, "host", "");
  int port = PropInt(o, "port", -1);
  int backlog = PropInt(o, "backlog", 511);
  bool reuse_port = PropBool(o, "reusePort", false);
  Napi::Value v6only = o.Get("ipv6Only");
  bool has_v6only = v6only.IsBoolean();
  bool v6only_val = has_v6only && v6only.As<Napi::Boolean>().Value();
  return Guard(info, [&]() -> Napi::Value {
    SockAddr addr = ParseAddr(host, port, kCodeSocket);
    std::string target = HostPort(host, port);
    UniqueFd sock;
    {
      NetnsSwitch ns(s.netns);
      sock = UniqueFd(::socket(addr.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      if (sock.Get() < 0) throw SysError{kCodeSocket, "socket", target, errno};
    }
    // The socket belongs to the namespace it was created in; the rest needs no setns.
    int fd = sock.Get();
    SetOpt(fd, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    if (reuse_port) SetOpt(fd, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
    if (addr.family == AF_INET6 && has_v6only) SetOpt(fd, SOL_IPV6, IPV6_V6ONLY, v6only_val ? 1 : 0, "IPV6_V6ONLY");
    ApplyCommon(fd, addr.family, s);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr.ss), addr.len) != 0) {
      throw SysError{kCodeSocket, "bind", target, errno};
    }
    if (::listen(fd, backlog) != 0) throw SysError{kCodeSocket, "listen", target, errno};
    return Napi::Number::New(info.Env(), sock.Release());
  });
}

// tcpSocket({ netns, family: 4|6, mark?, transparent, freebind, bindHost?, bindPort }) -> fd, unconnected.
Napi::Value TcpSocket(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(info.Env(), "netns addon: options expected");
  Napi::Object o = info[0].As<Napi::Object>();
  SockOpts s = ReadSockOpts(o);
  int family = PropInt(o, "family", 4) == 6 ? AF_INET6 : AF_INET;
  std::string bind_host = PropString(o, "bindHost", "");
  int bind_port = PropInt(o, "bindPort", 0);
  return Guard(info, [&]() -> Napi::Value {
    UniqueFd sock;
    {
      NetnsSwitch ns(s.netns);
      sock = UniqueFd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      if (sock.Get() < 0) throw SysError{kCodeSocket, "socket", family == AF_INET6 ? "tcp6" : "tcp4", errno};
    }
    int fd = sock.Get();
    ApplyCommon(fd, family, s);
    if (!bind_host.empty()) {
      SockAddr addr = ParseAddr(bind_host, bind_port, kCodeSocket);
      std::string target = HostPort(bind_host, bind_port);
      if (addr.family != family) throw SysError{kCodeSocket, "bind", target, EAFNOSUPPORT};
      // With port 0 let connect() choose the port, so that the 4-tuple (not just the address) must be unique.
      if (bind_port == 0) SetOpt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1, "IP_BIND_ADDRESS_NO_PORT");
      if (::bind(fd, reinterpret_cast<sockaddr*>(&addr.ss), addr.len) != 0) {
        throw SysError{kCodeSocket, "bind", target, errno};
      }
    }
    return Napi::Number::New(info.Env(), sock.Release());
  });
}

// setMark(fd, mark): SO_MARK on an existing socket (needs CAP_NET_ADMIN).
Napi::Value SetMark(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  if (info.Length() < 2 || !info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "netns addon: mark expected");
  uint32_t mark = info[1].As<Napi::Number>().Uint32Value();
  return Guard(info, [&]() -> Napi::Value {
    SetMarkOpt(fd, mark);
    return info.Env().Undefined();
  });
}

// getMark(fd) -> SO_MARK of a socket.
Napi::Value GetMark(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  return Guard(info, [&]() -> Napi::Value {
    uint32_t mark = 0;
    socklen_t len = sizeof mark;
    if (::getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len) != 0) {
      throw SysError{kCodeSocket, "getsockopt(SO_MARK)", "fd " + std::to_string(fd), errno};
    }
    return Napi::Number::New(info.Env(), mark);
  });
}

Napi::Object AddrObject(Napi::Env env, const sockaddr_storage& ss) {
  Napi::Object r = Napi::Object::New(env);
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET6) {
    const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof buf);
    r.Set("address", buf);
    r.Set("port", ntohs(sin6->sin6_port));
    r.Set("family", 6);
  } else {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof buf);
    r.Set("address", buf);
    r.Set("port", ntohs(sin->sin_port));
    r.Set("family", 4);
  }
  return r;
}

// originalDst(fd) -> { address, port, family }: the pre-NAT destination of a REDIRECTed connection.
// IPv4 sockets and v4-mapped IPv6 sockets use SO_ORIGINAL_DST (SOL_IP); IPv6 sockets IP6T_SO_ORIGINAL_DST.
Napi::Value OriginalDst(const Napi::CallbackInfo& info) {
  int fd = ArgInt(info, 0, "fd");
  return Guard(info, [&]() -> Napi::Value {
    std::string target = "fd " + std::to_string(fd);
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
      throw SysError{kCodeOriginalDst, "getsockname", target, errno};
    }
    sockaddr_storage out{};
    bool v4 = local.ss_family == AF_INET;
    if (local.ss_family == AF_INET6) {
      v4 = IN6_IS_ADDR_V4MAPPED(&reinterpret_cast<const sockaddr_in6*>(&local)->sin6_addr);
    } else if (local.ss_family != AF_INET) {
      throw SysError{kCodeOriginalDst, "getsockopt(SO_ORIGINAL_DST)", target + " (not an IP socket)", EAFNOSUPPORT};
    }
    if (v4) {
      len = sizeof(sockaddr_in);
      if (::getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &out, &len) != 0) {
        throw SysError{kCodeOriginalDst, "getsockopt(SO_ORIGINAL_DST)", target, errno};
      }
      out.ss_family = AF_INET;
    } else {
      len = sizeof(sockaddr_in6);
      if (::getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &out, &len) != 0) {
        throw SysError{kCodeOriginalDst, "getsockopt(IP6T_SO_ORIGINAL_DST)", target, errno};
      }
      out.ss_family = AF_INET6;
    }
    return AddrObject(info.Env(), out);
  });
}

}  // namespace

void InitNetns(Napi::Env env, Napi::Object exports) {
  exports.Set("openNetns", Napi::Function::New(env, OpenNetns, "openNetns"));
  exports.Set("closeFd", Napi::Function::New(env, CloseFd, "closeFd"));
  exports.Set("listenTcp", Napi::Function::New(env, ListenTcp, "listenTcp"));
  exports.Set("tcpSocket", Napi::Function::New(env, TcpSocket, "tcpSocket"));
  exports.Set("setMark", Napi::Function::New(env, SetMark, "setMark"));
  exports.Set("getMark", Napi::Function::New(env, GetMark, "getMark"));
  exports.Set("originalDst", Napi::Function::New(env, OriginalDst, "originalDst"));
}

}  // namespace netns
