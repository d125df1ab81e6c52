// Starts GraphiQL against this origin's /graphql, with subscriptions over /graphql/ws
// (graphql-transport-ws). A token saved by the storefront (localStorage "moviebook.session")
// is sent as the default Authorization header, so "myBookings" works after logging in there.
(function () {
  var origin = window.location.origin;
  var ws = origin.replace(/^http/, "ws") + "/graphql/ws";
  var headers = {};
  try {
    var session = JSON.parse(window.localStorage.getItem("moviebook.session") || "null");
    if (session && session.token) headers.Authorization = "Bearer " + session.token;
  } catch (e) {
    // no or unreadable session: browse anonymously
  }
  var fetcher = GraphiQL.createFetcher({
    url: origin + "/graphql",
    subscriptionUrl: ws,
    headers: headers,
    // the socket serves only the public subscription: the token is never sent over it
  });
  ReactDOM.createRoot(document.getElementById("graphiql")).render(
    React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
  );
})();
