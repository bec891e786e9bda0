-- 13.x permessage-deflate parameter negotiation (RFC 7692 7.1): for each
-- offer (or list of offers) the response must be a valid acceptance of one
-- offer, or decline; then messages of Autobahn's sizes round-trip, JSON text
-- and bitmap binary in turn, compressed in both directions as negotiated:
-- window sizes (distances are checked against server_max_window_bits) and
-- context takeover (a persistent inflate stream unless the server said
-- server_no_context_takeover; the client keeps its window unless told
-- client_no_context_takeover).
-- 13.24 (beyond Autobahn): invalid offers, which the server must decline.
local C12 = require "spec.conformance.cases.c12_deflate"

local PMD = "permessage-deflate"

-- { description, { header values }, negotiate opts }
local OFFERS = {
  { "plain offer", { PMD }, { plain = true } },                                                -- 13.1
  { "server_no_context_takeover", { PMD .. "; server_no_context_takeover" }, { snct_offer = true } },
  { "server_max_window_bits=8", { PMD .. "; server_max_window_bits=8" } },
  { "server_max_window_bits=15", { PMD .. "; server_max_window_bits=15" } },
  { "server_no_context_takeover, server_max_window_bits=8",
    { PMD .. "; server_no_context_takeover; server_max_window_bits=8" } },
  { "server_no_context_takeover, server_max_window_bits=15",
    { PMD .. "; server_no_context_takeover; server_max_window_bits=15" } },
  { "three offers in one header: (snct, smwb=8), (snct), plain",                               -- 13.7
    { PMD .. "; server_no_context_takeover; server_max_window_bits=8, " .. PMD ..
      "; server_no_context_takeover, " .. PMD } },
  { "server_max_window_bits=9", { PMD .. "; server_max_window_bits=9" } },                     -- 13.8
  { "server_max_window_bits=10", { PMD .. "; server_max_window_bits=10" } },
  { "server_max_window_bits=11", { PMD .. "; server_max_window_bits=11" } },
  { "server_max_window_bits=12", { PMD .. "; server_max_window_bits=12" } },
  { "server_max_window_bits=13", { PMD .. "; server_max_window_bits=13" } },
  { "server_max_window_bits=14", { PMD .. "; server_max_window_bits=14" } },                   -- 13.13
  { "client_max_window_bits (no value)", { PMD .. "; client_max_window_bits" } },              -- 13.14
  { "client_max_window_bits=8", { PMD .. "; client_max_window_bits=8" } },
  { "client_max_window_bits=12", { PMD .. "; client_max_window_bits=12" } },
  { "client_max_window_bits=15", { PMD .. "; client_max_window_bits=15" } },
  { "client_no_context_takeover", { PMD .. "; client_no_context_takeover" } },                 -- 13.18
  { "every parameter: cnct, snct, client_max_window_bits=9, server_max_window_bits=9",
    { PMD .. "; client_no_context_takeover; server_no_context_takeover; client_max_window_bits=9; " ..
      "server_max_window_bits=9" } },
  { "two offers in two header lines: (server_max_window_bits=10), plain",                      -- 13.20
    { PMD .. "; server_max_window_bits=10", PMD } },
  { "quoted values: server_max_window_bits=\"10\"; client_max_window_bits=\"12\"",
    { PMD .. '; server_max_window_bits="10"; client_max_window_bits="12"' } },
  { "an invalid offer (server_max_window_bits=7), then client_max_window_bits",
    { PMD .. "; server_max_window_bits=7, " .. PMD .. "; client_max_window_bits" } },
  { "an unknown extension, then the plain offer", { "x-webkit-deflate-frame, " .. PMD } },      -- 13.23
}

-- Offers that must be declined (RFC 7692 5: unknown parameters, invalid
-- values, duplicates) — the connection still opens, without the extension.
local INVALID = {
  PMD .. "; server_max_window_bits=16",
  PMD .. "; server_max_window_bits=7",
  PMD .. "; server_max_window_bits",
  PMD .. "; client_max_window_bits=16",
  PMD .. "; client_max_window_bits=7",
  PMD .. "; foo",
  PMD .. "; foo=bar",
  PMD .. "; server_no_context_takeover; server_no_context_takeover",
  PMD .. "; server_max_window_bits=10; server_max_window_bits=11",
  PMD .. "; server_no_context_takeover=1",
  PMD .. '; client_no_context_takeover="x"',
  PMD .. "; server_max_window_bits=010",
  PMD .. "; server_max_window_bits=abc",
  "x-webkit-deflate-frame",
}

return function(case)
  for j, o in ipairs(OFFERS) do
    for i, sz in ipairs(C12.MSG_SIZES) do
      local len, frag = sz[1], sz[2]
      case(string.format("13.%d.%d", j, i),
        string.format("Offer %s; echo %s messages of %d bytes%s", o[1],
          C12.count_desc(len), len,
          frag > 0 and string.format(", in fragments of %d bytes", frag) or ""),
        function(t)
          t:negotiate(o[2], o[3])
          C12.roundtrips(t, { "json", "bitmap" }, len, frag, C12.count(t, len))
          t:finish()
        end)
    end
  end

  for i, offer in ipairs(INVALID) do
    case(string.format("13.%d.%d", #OFFERS + 1, i),
      string.format("Offer the invalid %q; expect it declined and uncompressed echoes", offer),
      function(t)
        t:negotiate({ offer }, { invalid = true })
        t:roundtrip("text", "Hello, world! Hello, world! Hello, world!")
        t:roundtrip("binary", "\0\1\2\3\0\1\2\3\0\1\2\3")
        t:finish()
      end)
  end
end
