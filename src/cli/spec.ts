// "image[@LABEL]" as the reference tools take it: the label follows the last '@'.

export interface DeviceSpec {
  devices: string;
  label: string;
}

export function parseDeviceSpec(spec: string, defaultLabel = 'DATA'): DeviceSpec {
  const at = spec.lastIndexOf('@');
  if (at < 0) return { devices: spec, label: defaultLabel };
  const label = spec.slice(at + 1);
  const devices = spec.slice(0, at);
  if (!devices) throw new Error(`no device in "${spec}"`);
  if (!label) throw new Error(`empty PFS label in "${spec}"`);
  return { devices, label };
}
