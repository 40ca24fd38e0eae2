// The overview of a run that is still writing reloads itself; the server reads the disk on each request.
setTimeout(function () { window.location.reload(); }, 10000);
