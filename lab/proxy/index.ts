/**
 * lab/proxy: the lab's kube-proxy (ClusterIP/NodePort → endpoint DNAT with iptables in a node's netns).
 */
export { ServiceProxy, type ServiceProxyOptions } from './proxy.ts';
export {
  CHAIN,
  MASQ_MARK,
  type ProxyEndpoint,
  type ProxyProtocol,
  type ProxyService,
  type ProxyServicePort,
  renderRules,
} from './rules.ts';
