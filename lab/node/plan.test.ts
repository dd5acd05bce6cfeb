import { describe, expect, it } from 'vitest';
import { mapHostPath } from './network.ts';
import { addressPlan, inCidr, names, validatePrefix } from './plan.ts';

describe('address plan and names', () => {
  it('lays out one /16 per lab', () => {
    const p = addressPlan(42);
    expect([p.fabricGateway, p.clusterDnsIp, p.apiServerIp, p.serviceCidr]).toEqual([
      '10.42.0.1',
      '10.42.0.2',
      '10.42.0.3',
      '10.42.240.0/20',
    ]);
    expect([p.nodeIp(0), p.podCidr(0), p.podGateway(0), p.nodeIp(3), p.podCidr(3)]).toEqual([
      '10.42.0.10',
      '10.42.1.0/24',
      '10.42.1.1',
      '10.42.0.13',
      '10.42.4.0/24',
    ]);
    expect(() => addressPlan(0)).toThrow(/block/);
    expect(() => p.podCidr(200)).toThrow(/node index/);
    expect(inCidr('10.42.4.7', p.podCidr(3))).toBe(true);
    expect(inCidr('10.42.5.7', p.podCidr(3))).toBe(false);
    expect(inCidr('10.42.250.1', p.serviceCidr)).toBe(true);
  });

  it('a prefix matcher never matches another lab whose prefix extends it', () => {
    expect(() => validatePrefix('amb-')).not.toThrow();
    for (const bad of ['amb', 'Amb-', 'a-b-', '-', 'toolongname-'])
      expect(() => validatePrefix(bad)).toThrow();
    const m = names.matcher('amb-');
    expect(['amb-fabric', 'amb-node-0', 'amb-pod-0a1b2c'].every((n) => m.test(n))).toBe(true);
    expect(['ambx-fabric', 'amb-nodex', 'xamb-node-1', 'amb-pod-'].some((n) => m.test(n))).toBe(false);
  });

  it('maps hostPaths under the node root, except the shared machine trees', () => {
    expect(mapHostPath('/lab/nodes/n0', '/var/run/ztunnel')).toBe('/lab/nodes/n0/var/run/ztunnel');
    expect(mapHostPath('/lab/nodes/n0', '/etc/cni/net.d/')).toBe('/lab/nodes/n0/etc/cni/net.d');
    expect(mapHostPath('/lab/nodes/n0', '/../../etc')).toBe('/lab/nodes/n0/etc');
    expect(mapHostPath('/lab/nodes/n0', '/var/run/netns')).toBe('/var/run/netns');
    expect(mapHostPath('/lab/nodes/n0', '/proc')).toBe('/proc');
  });
});
