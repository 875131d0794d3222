--- Options of nib.nvim: defaults, validation and the merged result of `setup()`.
local M = {}

---@class nib.Keymaps
---@field accept? string|false       Accept the whole suggestion.
---@field accept_word? string|false  Accept the next word of it.
---@field accept_line? string|false  Accept the rest of its current line (or its next line).
---@field next? string|false         Next suggestion, or ask for one now (invoked).
---@field prev? string|false         Previous suggestion, or ask for one now (invoked).
---@field dismiss? string|false      Hide the suggestion.

---@class nib.Options
---@field cmd? string|string[]        Server command; default `nib` on $PATH, else the checkout's build.
---@field filetypes? string[]         Filetypes nib starts for.
---@field root_markers? string[]      Files that mark a project root.
---@field settings? table             nib's settings (docs/configuration.md), sent as initializationOptions.
---@field auto_trigger? boolean       Suggest while typing (`:NibToggle` flips it).
---@field debounce? integer           Milliseconds of quiet typing before a suggestion is requested.
---@field native? boolean             Use `vim.lsp.inline_completion` where it exists (Neovim 0.12+).
---@field keymaps? nib.Keymaps|false  Insert-mode keys (buffer-local); `false` sets none.
---@field status_messages? boolean    Echo model status changes (`nib/status`).
---@field progress_messages? boolean  Echo `$/progress` of code actions.

---@type nib.Options
M.defaults = {
  cmd = nil,
  filetypes = { "python", "rust", "javascript", "javascriptreact", "typescript", "typescriptreact", "go", "java", "c", "cpp" },
  root_markers = { ".git", "pyproject.toml", "setup.py", "Cargo.toml", "package.json", "go.mod" },
  settings = {},
  auto_trigger = true,
  debounce = 150,
  native = true,
  keymaps = {
    accept = "<M-l>",
    accept_word = "<M-w>",
    accept_line = "<M-j>",
    next = "<M-]>",
    prev = "<M-[>",
    dismiss = "<C-]>",
  },
  status_messages = true,
  progress_messages = true,
}

---@type nib.Options
M.options = vim.deepcopy(M.defaults)

--- Whether `setup()` has been called.
M.configured = false

---@param opts? nib.Options
---@return nib.Options
function M.set(opts)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("nib.setup: expected a table, got " .. type(opts), 2)
  end
  local types = {
    cmd = { "string", "table", "function" },
    filetypes = { "table" },
    root_markers = { "table" },
    settings = { "table" },
    auto_trigger = { "boolean" },
    debounce = { "number" },
    native = { "boolean" },
    keymaps = { "table", "boolean" },
    status_messages = { "boolean" },
    progress_messages = { "boolean" },
  }
  for key, value in pairs(opts) do
    local allowed = types[key]
    if not allowed then
      error(("nib.setup: unknown option %q"):format(tostring(key)), 2)
    end
    if not vim.tbl_contains(allowed, type(value)) then
      error(("nib.setup: option %s: expected %s, got %s"):format(key, table.concat(allowed, "|"), type(value)), 2)
    end
  end
  local merged = vim.tbl_deep_extend("force", vim.deepcopy(M.defaults), opts)
  -- Lists replace the defaults rather than merging index by index.
  for _, key in ipairs({ "filetypes", "root_markers", "cmd" }) do
    if opts[key] ~= nil then
      merged[key] = opts[key]
    end
  end
  if opts.keymaps == false then
    merged.keymaps = false
  end
  M.options = merged
  M.configured = true
  return merged
end

--- The highlight groups; `default = true` so colorschemes and users can restyle them.
function M.highlights()
  vim.api.nvim_set_hl(0, "NibGhostText", { link = "Comment", default = true })
end

return M
