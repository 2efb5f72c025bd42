%% skybench: the Erlang side of benchmarks/membership.py.
%%
%% Behaves like `skycluster agent --json`: prints one JSON object per line on
%% stdout -- "started", then "nodeup" / "nodedown" for every peer -- and keeps
%% connecting to the given seed hosts.  Erlang's `global` (connect_all, the
%% default) turns one connection into a full mesh, as skycluster does.
%%
%% Start it as (one line):
%%   erl -name n1@127.0.0.1 -setcookie C -noshell -pa EBIN
%%       -kernel inet_dist_listen_min P inet_dist_listen_max P
%%       -kernel inet_dist_use_interface '{127,0,0,1}'
%%       -kernel net_ticktime 4 -kernel net_tickintensity 4
%%       -run skybench main n1@127.0.0.1:P1 [more hosts...]
%% with ERL_EPMD_PORT pointing at the benchmark's own epmd.  Hosts may be
%% given as name@host or name@host:port (the port is ignored: epmd resolves it).
%%
%% Failure detection: with net_ticktime T and net_tickintensity I a tick is sent
%% every T/I s when the link is otherwise idle, and a peer from which nothing was
%% received for I consecutive tick periods is dropped, i.e. after T - T/I .. T s
%% of silence (nodedown reason net_tick_timeout, reported as heartbeat_timeout).
%% T = 4, I = 4 is a 1 s tick and a 3..4 s timeout, the closest match to
%% skycluster's --heartbeat-interval 1 --heartbeat-timeout 3.
-module(skybench).

-export([main/0, main/1]).

-define(DEFAULT_RETRY_MS, 250).

main() ->
    main([]).

main(Args) ->
    Hosts = [parse_host(A) || A <- Args],
    Parent = self(),
    Pid = spawn(fun() -> init(Parent, Hosts) end),
    receive
        {Pid, ready} -> ok
    after 10000 ->
        erlang:halt(2)
    end.

init(Parent, Hosts) ->
    ok = net_kernel:monitor_nodes(true, [nodedown_reason]),
    {ok, Tick} = application:get_env(kernel, net_ticktime),
    Intensity = application:get_env(kernel, net_tickintensity, 4),
    emit([{event, "started"},
          {node, atom_to_list(node())},
          {address, "127.0.0.1:" ++ integer_to_list(listen_port())},
          {time, now_s()},
          {net_ticktime, Tick},
          {net_tickintensity, Intensity},
          {otp_release, erlang:system_info(otp_release)}]),
    Parent ! {self(), ready},
    %% With -name, distribution is up before this module runs: peers may
    %% already have connected (their nodeup messages predate the subscription).
    %% Report those now; the loop drops the duplicates.
    Up = lists:foldl(fun nodeup/2, sets:new([{version, 2}]), nodes()),
    Self = node(),
    Seeds = [H || H <- Hosts, H =/= Self],
    Retry = retry_ms(),
    spawn(fun() -> connector(Seeds, Retry) end),
    loop(Up).

loop(Up) ->
    receive
        {nodeup, Node, _Info} ->
            loop(nodeup(Node, Up));
        {nodedown, Node, Info} ->
            Raw = proplists:get_value(nodedown_reason, Info, unknown),
            emit([{event, "nodedown"},
                  {node, atom_to_list(Node)},
                  {reason, reason(Raw)},
                  {erlang_reason, term_text(Raw)},
                  {time, now_s()}]),
            loop(sets:del_element(Node, Up));
        _Other ->
            loop(Up)
    end.

nodeup(Node, Up) ->
    case sets:is_element(Node, Up) of
        true ->
            Up;
        false ->
            emit([{event, "nodeup"}, {node, atom_to_list(Node)}, {time, now_s()}]),
            sets:add_element(Node, Up)
    end.

%% Keep (re)connecting to the seeds that are not connected, like the agent's
%% epmd strategy (--retry-interval).  connect_node/1 may block (net_setuptime)
%% on a frozen peer; it runs here, not in the process that prints events.
connector(Seeds, Retry) ->
    Connected = nodes(),
    _ = [net_kernel:connect_node(S) || S <- Seeds, not lists:member(S, Connected)],
    timer:sleep(Retry),
    connector(Seeds, Retry).

%% SKYBENCH_RETRY_MS: pause between connection rounds (the agent's
%% --retry-interval), 250 ms unless set.
retry_ms() ->
    case string:to_integer(os:getenv("SKYBENCH_RETRY_MS", "")) of
        {Ms, ""} when Ms > 0 -> Ms;
        _ -> ?DEFAULT_RETRY_MS
    end.

reason(connection_closed) -> "connection_closed";
reason(net_tick_timeout) -> "heartbeat_timeout";
reason(send_net_tick_timeout) -> "heartbeat_timeout";
reason(disconnect) -> "disconnect";
reason(shutdown) -> "shutdown";
reason(net_kernel_terminated) -> "shutdown";
reason(Other) -> term_text(Other).

parse_host(A) when is_atom(A) ->
    parse_host(atom_to_list(A));
parse_host(S) when is_list(S) ->
    case string:split(S, ":", trailing) of
        [Name, _Port] -> list_to_atom(Name);
        [Name] -> list_to_atom(Name)
    end.

listen_port() ->
    case application:get_env(kernel, inet_dist_listen_min) of
        {ok, P} when is_integer(P) ->
            P;
        _ ->
            [Name, _Host] = string:split(atom_to_list(node()), "@"),
            case erl_epmd:port_please(Name, {127, 0, 0, 1}) of
                {port, P, _Version} -> P;
                _ -> 0
            end
    end.

now_s() ->
    erlang:system_time(microsecond) / 1000000.

term_text(T) ->
    lists:flatten(io_lib:format("~0p", [T])).

%% Minimal JSON object writer: values are strings, integers or floats.
emit(Pairs) ->
    Fields = [["\"", atom_to_list(K), "\": ", value(V)] || {K, V} <- Pairs],
    io:put_chars(standard_io, ["{", lists:join(", ", Fields), "}\n"]).

value(V) when is_integer(V) -> integer_to_list(V);
value(V) when is_float(V) -> float_to_list(V, [{decimals, 6}]);
value(V) when is_list(V) -> ["\"", escape(V), "\""].

escape([]) -> [];
escape([$" | T]) -> [$\\, $" | escape(T)];
escape([$\\ | T]) -> [$\\, $\\ | escape(T)];
escape([C | T]) when C < 32 -> io_lib:format("\\u~4.16.0b", [C]) ++ escape(T);
escape([C | T]) -> [C | escape(T)].
