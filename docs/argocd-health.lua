-- Argo CD resource health for inference-access.io/InferenceAccess.
--
-- Install it in the argocd-cm ConfigMap (see docs/install.md):
--   resource.customizations.health.inference-access.io_InferenceAccess: |
--     <this file>
--
-- Follows kstatus: Healthy only when the operator has seen the current spec
-- (observedGeneration == metadata.generation) and says Ready=True. Waiting for the
-- InferenceService or the first credential is Progressing; anything a person must fix is
-- Degraded. Written for Lua 5.1, the dialect of Argo CD's interpreter (gopher-lua).
local hs = {}

-- Ready=False reasons that resolve by themselves once KServe or the operator catches up.
local waiting_reasons = {
  Pending = true,
  InferenceServiceNotReady = true,
  WaitingForURL = true,
}

local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the inference-access operator to report status"
  return hs
end

local ready = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end

-- Both the status and the Ready condition carry observedGeneration; either being behind means
-- the status describes an older spec.
local observed = status.observedGeneration
if ready ~= nil and ready.observedGeneration ~= nil then
  if observed == nil or ready.observedGeneration < observed then
    observed = ready.observedGeneration
  end
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

local detail = ready.message or ""
if ready.reason ~= nil and ready.reason ~= "" then
  detail = ready.reason .. ": " .. detail
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
elseif ready.status == "False" and not waiting_reasons[ready.reason or ""] then
  hs.status = "Degraded"
  hs.message = detail
else
  hs.status = "Progressing"
  hs.message = detail
end
return hs
