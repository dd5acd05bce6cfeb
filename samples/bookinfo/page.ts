/**
 * productpage's HTML. The markup is our own; what tests and users key on follows upstream's page: the title
 * `Simple Bookstore App`, the book title, a details panel or `Error fetching product details!` plus the error
 * text, a reviews panel or `Error fetching product reviews!` plus the error text, ratings as
 * `<font color="black|red">` around `glyphicon-star` / `glyphicon-star-empty` spans, the ratings error in
 * italics, and `Reviews served by: <u>reviews-vN-…</u>` naming the pod that answered.
 */
import type { Product } from './data.ts';

const ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&#34;',
  "'": '&#39;',
};

export function escapeHtml(value: unknown): string {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ESCAPES[c] ?? c);
}

function field(obj: unknown, key: string): unknown {
  return typeof obj === 'object' && obj !== null ? (obj as Record<string, unknown>)[key] : undefined;
}

function layout(body: string): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="X-UA-Compatible" content="IE=edge">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>Simple Bookstore App</title>
<link rel="stylesheet" href="static/bookinfo.css">
<script src="static/bookinfo.js" defer></script>
</head>
<body>
${body}
</body>
</html>
`;
}

function nav(user: string | null): string {
  const right = user
    ? `<p class="navbar-text navbar-right"><i class="glyphicon glyphicon-user" aria-hidden="true"></i>` +
      `<span class="user">${escapeHtml(user)} ( <a href="logout">sign out</a> )</span></p>`
    : `<button type="button" class="btn navbar-btn navbar-right" id="sign-in-button">Sign in</button>`;
  return `<nav class="navbar">
  <div class="container">
    <a class="navbar-brand" href="#">BookInfo Sample</a>
    ${right}
  </div>
</nav>
<dialog id="login-modal">
  <form method="post" action="login" name="login_form">
    <h4>Please sign in</h4>
    <p><input type="text" name="username" id="username" placeholder="User Name" required></p>
    <p><input type="password" name="passwd" placeholder="Password"></p>
    <p><button type="submit" class="btn btn-primary">Sign in</button>
    <button type="button" class="btn" id="close-dialog">Cancel</button></p>
  </form>
</dialog>`;
}

function detailsPanel(status: number, details: unknown): string {
  if (status !== 200) {
    const error = field(details, 'error');
    return `<h4 class="text-center text-primary">Error fetching product details!</h4>
      ${error ? `<p>${escapeHtml(error)}</p>` : ''}`;
  }
  const row = (label: string, key: string) => `<dt>${label}:</dt><dd>${escapeHtml(field(details, key))}</dd>`;
  return `<h4 class="text-center text-primary">Book Details</h4>
      <dl>
        ${row('Type', 'type')}
        ${row('Pages', 'pages')}
        ${row('Publisher', 'publisher')}
        ${row('Language', 'language')}
        ${row('ISBN-10', 'ISBN-10')}
        ${row('ISBN-13', 'ISBN-13')}
      </dl>`;
}

const MAX_STARS = 5;

function ratingHtml(rating: unknown): string {
  if (typeof rating !== 'object' || rating === null) return '';
  const stars = field(rating, 'stars');
  if (typeof stars === 'number' && stars > 0) {
    const full = Math.min(Math.trunc(stars), MAX_STARS);
    const color = escapeHtml(field(rating, 'color'));
    return `<font color="${color}">
          ${'<span class="glyphicon glyphicon-star"></span>'.repeat(full)}
          ${'<span class="glyphicon glyphicon-star-empty"></span>'.repeat(MAX_STARS - full)}
        </font>`;
  }
  const error = field(rating, 'error');
  return error ? `<p><i>${escapeHtml(error)}</i></p>` : '';
}

function reviewsPanel(status: number, reviews: unknown): string {
  if (status !== 200) {
    const error = field(reviews, 'error');
    return `<h4 class="text-center text-primary">Error fetching product reviews!</h4>
      ${error ? `<p>${escapeHtml(error)}</p>` : ''}`;
  }
  const list = field(reviews, 'reviews');
  const items = Array.isArray(list) ? list : [];
  const podname = field(reviews, 'podname');
  const clustername = field(reviews, 'clustername');
  // reviews reports an unset cluster name as the string "null" (upstream's Java string concatenation).
  const cluster =
    clustername !== undefined && clustername !== null && clustername !== 'null' && clustername !== ''
      ? ` on cluster <u>${escapeHtml(clustername)}</u>`
      : '';
  const servedBy =
    podname !== undefined
      ? `<p class="served-by">Reviews served by: <u>${escapeHtml(podname)}</u>${cluster}</p>`
      : '';
  const quotes = items
    .map(
      (r: unknown) => `<blockquote>
        <p>${escapeHtml(field(r, 'text'))}</p>
        <small>${escapeHtml(field(r, 'reviewer'))}</small>
        ${ratingHtml(field(r, 'rating'))}
      </blockquote>`,
    )
    .join('\n      ');
  return `<h4 class="text-center text-primary">Book Reviews</h4>
      ${quotes}
      ${servedBy}`;
}

export interface ProductPageView {
  readonly product: Product | null;
  readonly detailsStatus: number;
  readonly details: unknown;
  readonly reviewsStatus: number;
  readonly reviews: unknown;
  readonly user: string | null;
}

export function renderProductPage(v: ProductPageView): string {
  return layout(`${nav(v.user)}
<div class="container-fluid">
  <div class="row">
    <div class="col-md-12">
      <h3 class="text-center text-primary">${escapeHtml(v.product?.title ?? '')}</h3>
      <p>Summary: ${v.product?.descriptionHtml ?? ''}</p>
    </div>
  </div>
  <div class="row">
    <div class="col-md-6" id="details">
      ${detailsPanel(v.detailsStatus, v.details)}
    </div>
    <div class="col-md-6" id="reviews">
      ${reviewsPanel(v.reviewsStatus, v.reviews)}
    </div>
  </div>
</div>`);
}

/** One service of the call graph shown on the index page. */
export interface ServiceNode {
  readonly name: string;
  readonly endpoint: string;
  readonly children: readonly ServiceNode[];
}

function serviceTable(node: ServiceNode): string {
  const children =
    node.children.length === 0
      ? ''
      : `<ul>${node.children.map((c) => `<li>${serviceTable(c)}</li>`).join('')}</ul>`;
  return `<table class="table table-condensed table-bordered table-hover">
<tr><th>name</th><td>${escapeHtml(node.name)}</td></tr>
<tr><th>endpoint</th><td>${escapeHtml(node.endpoint)}</td></tr>
<tr><th>children</th><td>${children}</td></tr>
</table>`;
}

export function renderIndexPage(root: ServiceNode): string {
  return layout(`<div class="container">
  <h3>Bookinfo: one product page built from three backend services</h3>
  ${serviceTable(root)}
  <h4>Send a request through the whole application, as an ordinary user or as a tester:</h4>
  <p><a href="/productpage?u=normal">Normal user</a></p>
  <p><a href="/productpage?u=test">Test user</a></p>
</div>`);
}
