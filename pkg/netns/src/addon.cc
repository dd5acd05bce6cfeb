// Module entry point of the pkg/netns addon (loaded by pkg/netns/addon.ts).
#include "common.h"

namespace {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  netns::InitNetns(env, exports);
  netns::InitSeqpacket(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(netns, Init)
