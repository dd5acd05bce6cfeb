// Errno naming, JS error construction and argument readers for the pkg/netns addon.
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common.h"

namespace netns {

std::string ErrnoName(int err) {
  switch (err) {
#define NETNS_ERRNO(name) \
  case name:              \
    return #name;
    NETNS_ERRNO(EPERM)
    NETNS_ERRNO(ENOENT)
    NETNS_ERRNO(ESRCH)
    NETNS_ERRNO(EINTR)
    NETNS_ERRNO(EIO)
    NETNS_ERRNO(ENXIO)
    NETNS_ERRNO(E2BIG)
    NETNS_ERRNO(EBADF)
    NETNS_ERRNO(EAGAIN)
    NETNS_ERRNO(ENOMEM)
    NETNS_ERRNO(EACCES)
    NETNS_ERRNO(EFAULT)
    NETNS_ERRNO(EBUSY)
    NETNS_ERRNO(EEXIST)
    NETNS_ERRNO(ENODEV)
    NETNS_ERRNO(ENOTDIR)
    NETNS_ERRNO(EISDIR)
    NETNS_ERRNO(EINVAL)
    NETNS_ERRNO(ENFILE)
    NETNS_ERRNO(EMFILE)
    NETNS_ERRNO(ENOTTY)
    NETNS_ERRNO(ENOSPC)
    NETNS_ERRNO(EPIPE)
    NETNS_ERRNO(ERANGE)
    NETNS_ERRNO(ENAMETOOLONG)
    NETNS_ERRNO(ENOSYS)
    NETNS_ERRNO(ELOOP)
    NETNS_ERRNO(ENOPROTOOPT)
    NETNS_ERRNO(ENOTSOCK)
    NETNS_ERRNO(EDESTADDRREQ)
    NETNS_ERRNO(EMSGSIZE)
    NETNS_ERRNO(EPROTOTYPE)
    NETNS_ERRNO(EPROTONOSUPPORT)
    NETNS_ERRNO(ESOCKTNOSUPPORT)
    NETNS_ERRNO(EOPNOTSUPP)
    NETNS_ERRNO(EAFNOSUPPORT)
    NETNS_ERRNO(EADDRINUSE)
    NETNS_ERRNO(EADDRNOTAVAIL)
    NETNS_ERRNO(ENETDOWN)
    NETNS_ERRNO(ENETUNREACH)
    NETNS_ERRNO(ECONNABORTED)
    NETNS_ERRNO(ECONNRESET)
    NETNS_ERRNO(ENOBUFS)
    NETNS_ERRNO(EISCONN)
    NETNS_ERRNO(ENOTCONN)
    NETNS_ERRNO(ETIMEDOUT)
    NETNS_ERRNO(ECONNREFUSED)
    NETNS_ERRNO(EHOSTUNREACH)
    NETNS_ERRNO(EALREADY)
    NETNS_ERRNO(EINPROGRESS)
    NETNS_ERRNO(ESTALE)
    NETNS_ERRNO(EUSERS)
#undef NETNS_ERRNO
    default: {
      char buf[24];
      std::snprintf(buf, sizeof buf, "E%d", err);
      return buf;
    }
  }
}

Napi::Error ToJsError(Napi::Env env, const SysError& e) {
  std::string name = ErrnoName(e.err);
  std::string message = e.op;
  if (!e.target.empty()) message += " " + e.target;
  message += ": " + name + " (" + std::strerror(e.err) + ")";
  Napi::Error err = Napi::Error::New(env, message);
  Napi::Object o = err.Value();
  o.Set("meshCode", e.code);
  o.Set("op", e.op);
  o.Set("target", e.target);
  o.Set("errno", name);
  o.Set("errnoNumber", e.err);
  o.Set("description", std::strerror(e.err));
  return err;
}

int32_t ArgInt(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string("netns addon: argument ") + name + " must be a number");
  }
  return info[i].As<Napi::Number>().Int32Value();
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string("netns addon: argument ") + name + " must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

int32_t PropInt(const Napi::Object& o, const char* name, int32_t dflt) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsNumber()) {
    throw Napi::TypeError::New(o.Env(), std::string("netns addon: option ") + name + " must be a number");
  }
  return v.As<Napi::Number>().Int32Value();
}

bool PropBool(const Napi::Object& o, const char* name, bool dflt) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsBoolean()) {
    throw Napi::TypeError::New(o.Env(), std::string("netns addon: option ") + name + " must be a boolean");
  }
  return v.As<Napi::Boolean>().Value();
}

std::string PropString(const Napi::Object& o, const char* name, const std::string& dflt) {
  Napi::Value v = o.Get(name);
  if (v.IsUndefined() || v.IsNull()) return dflt;
  if (!v.IsString()) {
    throw Napi::TypeError::New(o.Env(), std::string("netns addon: option ") + name + " must be a string");
  }
  return v.As<Napi::String>().Utf8Value();
}

}  // namespace netns
