// A charging station written with ocpp-rpc (an independent OCPP implementation) in strict
// mode: every call and answer, both ways, is validated against the OCPP JSON schemas.
// Run by tests/integration/test_edge_ocpp_rpc.py with NODE_PATH from scripts/ocpp-rpc.sh.
//
//   node ocpp_rpc_station.js '{"url": "...", "identity": "...", "password": "...",
//                              "protocol": "ocpp2.0.1" | "ocpp2.1", "reject": false,
//                              "dynamic": false}'
//
// Scenario: boot, EVSE 1 available, transaction started (prints {"event": "started"}),
// then on the first accepted TxProfile: meter values (prints {"event": "metered"}).
// Every message the edge sends is printed as a JSON line; stdin closing ends the station.
'use strict';
const { RPCClient, createValidator } = require('ocpp-rpc');

// ocpp-rpc 2.2.1 ships the OCPP 2.1 schemas with ids 'urn:<Action>Request/Response' but looks
// them up as 'urn:<Action>.req/.conf' (its 2.0.1 naming): re-key them, validate as strictly.
function ocpp21Validator() {
  const schemas = require('ocpp-rpc/lib/schemas/ocpp2_1.json').map((s) => ({
    ...s,
    $id: s.$id.replace(/Request$/, '.req').replace(/Response$/, '.conf'),
  }));
  return createValidator('ocpp2.1', schemas);
}

const cfg = JSON.parse(process.argv[2]);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const now = () => new Date().toISOString();
const txId = 'rpc-tx-1';
let seqNo = 0;
let metered = false;
const lastTx = {};

const cli = new RPCClient({
  endpoint: cfg.url,
  identity: cfg.identity,
  password: cfg.password,
  protocols: [cfg.protocol],
  strictMode: true,
  strictModeValidators: cfg.protocol === 'ocpp2.1' ? [ocpp21Validator()] : [],
  reconnect: false,
});

function meter(wh, w) {
  return [{ timestamp: now(), sampledValue: [
    { value: wh, measurand: 'Energy.Active.Import.Register' },
    { value: w, measurand: 'Power.Active.Import' },
  ] }];
}

async function sendMeter() {
  metered = true;
  await cli.call('TransactionEvent', {
    eventType: 'Updated', timestamp: now(), triggerReason: 'ChargingRateChanged', seqNo: ++seqNo,
    transactionInfo: { transactionId: txId }, meterValue: meter(2500, 6900),
  });
  out({ event: 'metered' });
}

cli.handle('GetVariables', ({ params }) => {
  out({ event: 'call', action: 'GetVariables', params });
  const values = {
    RateUnit: 'A', SupplyPhases: '3', SupportsDynamicProfiles: cfg.dynamic ? 'true' : 'false',
    SupportedOperationModes: cfg.freq ? 'ChargingOnly,CentralSetpoint,LocalFrequency' : 'ChargingOnly',
  };
  return { getVariableResult: params.getVariableData.map((d) => (
    d.variable.name in values
      ? { attributeStatus: 'Accepted', attributeValue: values[d.variable.name], component: d.component, variable: d.variable }
      : { attributeStatus: 'UnknownVariable', component: d.component, variable: d.variable }
  )) };
});

cli.handle('SetChargingProfile', ({ params }) => {
  out({ event: 'call', action: 'SetChargingProfile', params });
  if (cfg.reject) return { status: 'Rejected', statusInfo: { reasonCode: 'NotSupported' } };
  if (params.chargingProfile.chargingProfilePurpose === 'TxProfile') lastTx[params.evseId] = params.chargingProfile;
  if (params.chargingProfile.chargingProfilePurpose === 'TxProfile' && !metered) {
    setImmediate(() => sendMeter().catch((e) => out({ event: 'error', error: String(e) })));
  }
  return { status: 'Accepted' };
});

cli.handle('UpdateDynamicSchedule', ({ params }) => {
  out({ event: 'call', action: 'UpdateDynamicSchedule', params });
  return { status: 'Accepted' };
});

cli.handle('GetCompositeSchedule', ({ params }) => {
  out({ event: 'call', action: 'GetCompositeSchedule', params });
  const p = lastTx[params.evseId];
  if (!p) return { status: 'Rejected' };
  const sched = p.chargingSchedule[0];
  return { status: 'Accepted', schedule: {
    evseId: params.evseId, duration: params.duration, scheduleStart: now(),
    chargingRateUnit: sched.chargingRateUnit,
    chargingSchedulePeriod: [{ startPeriod: 0, limit: sched.chargingSchedulePeriod[0].limit }],
  } };
});

cli.handle(({ method, params }) => {
  out({ event: 'call', action: method, params });
  throw new Error('not implemented');
});

async function main() {
  await cli.connect();
  const boot = await cli.call('BootNotification', {
    reason: 'PowerUp', chargingStation: { vendorName: 'ocpp-rpc', model: 'strict-station' },
  });
  out({ event: 'booted', status: boot.status });
  await cli.call('StatusNotification', { timestamp: now(), connectorStatus: 'Occupied', evseId: 1, connectorId: 1 });
  await cli.call('TransactionEvent', {
    eventType: 'Started', timestamp: now(), triggerReason: 'CablePluggedIn', seqNo: ++seqNo,
    transactionInfo: { transactionId: txId }, evse: { id: 1, connectorId: 1 }, meterValue: meter(1000, 0),
  });
  await cli.call('Heartbeat', {});
  out({ event: 'started' });
}

process.stdin.on('data', () => {});
process.stdin.on('end', async () => { await cli.close({ code: 1000 }); process.exit(0); });
main().catch((e) => { out({ event: 'error', error: String(e) }); process.exit(1); });
