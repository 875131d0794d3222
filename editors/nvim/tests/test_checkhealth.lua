-- :checkhealth nib, first with no server running (it starts a short-lived one to read the
-- model's nib/status), then with nib attached to a buffer: OK lines and no ERROR.
local H = dofile(vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h") .. "/helpers.lua")

local function checkhealth()
  vim.cmd("checkhealth nib")
  local lines = H.lines(0)
  vim.cmd("bwipeout!")
  return lines
end

local function check(lines, label)
  local text = table.concat(lines, "\n")
  H.log(label .. ":\n" .. text)
  local ok_lines = vim.tbl_filter(function(l)
    return l:find("OK", 1, true) ~= nil
  end, lines)
  H.truthy(#ok_lines >= 5, label .. ": at least 5 OK lines")
  H.truthy(not text:find("ERROR", 1, true), label .. ": no ERROR")
  H.truthy(not text:find("WARNING", 1, true), label .. ": no WARNING")
  H.truthy(text:find("nib --version`: nib ", 1, true), label .. ": reports nib --version")
  H.truthy(text:find("model ready", 1, true), label .. ": reports the model ready")
  H.truthy(text:find("ONNX Runtime", 1, true), label .. ": reports ONNX Runtime")
  H.truthy(text:find("runs the candidate tests in a sandbox", 1, true), label .. ": reports that tests are run")
  H.truthy(text:find("OK Python: /", 1, true), label .. ": reports the Python interpreter")
  return text
end

H.run("checkhealth", function()
  vim.cmd("runtime plugin/nib.lua")
  local dir = H.shop_copy()
  vim.cmd.cd(dir)
  require("nib").setup(H.nib_opts())

  local text = check(checkhealth(), "without a running server")
  H.truthy(text:find("ONNX Runtime: /", 1, true), "the probe names the ONNX Runtime library")

  -- A model that does not load is an ERROR with nib's message.
  require("nib").setup(H.nib_opts({ settings = { modelPath = dir .. "/no-such-model" } }))
  local bad_model = table.concat(checkhealth(), "\n")
  H.log("bad model:\n" .. bad_model)
  H.truthy(bad_model:find("ERROR", 1, true) and bad_model:find("no-such-model", 1, true), "model error reported")

  -- Verification off: reported, and no toolchain is needed for that.
  require("nib").setup(H.nib_opts({ settings = { tests = { verify = "off" } } }))
  local unverified = table.concat(checkhealth(), "\n")
  H.truthy(unverified:find('written unverified: `settings.tests.verify` is "off"', 1, true), "verify off reported: " .. unverified)

  require("nib").setup(H.nib_opts())

  vim.cmd.edit(dir .. "/cart.py")
  H.wait_ready(vim.api.nvim_get_current_buf())
  check(checkhealth(), "with nib running")

  -- :NibStatus with nib running.
  local status = table.concat(require("nib").status(), "\n")
  H.log(":NibStatus:\n" .. status)
  H.truthy(status:find("model: ready, SmolLM2", 1, true), ":NibStatus shows the model")
  H.truthy(status:find("engine: ", 1, true), ":NibStatus shows the engine counters (nib/inspect)")
  H.eq("nib", require("nib").statusline(), "statusline() when ready")
  H.eq("ready", require("nib").model_status().state, "model_status()")

  -- A missing binary is an ERROR with advice.
  require("nib").setup(H.nib_opts({ cmd = { dir .. "/no-such-nib" } }))
  local broken = table.concat(checkhealth(), "\n")
  H.truthy(broken:find("ERROR", 1, true) and broken:find("no-such-nib", 1, true), "missing binary reported: " .. broken)
end)
